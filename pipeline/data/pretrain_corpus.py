"""The pretraining corpus: an object-centric stand-in for ImageNet, drawn with the synthetic generator's code.

The papers fine-tune ImageNet-pretrained backbones; these machines have no ImageNet. This corpus is
its stand-in as a *transfer* task, not the target task: single-label classification of one dominant
object per image over many more classes than the WSSS ten.

  * Classes: the ten WSSS classes (as VOC's classes appear in ImageNet) plus `num_new_classes`
    procedural shape/texture classes (the majority), each a random silhouette of primitives with
    its own hue, texture family, aspect and colour ranges (`pipeline.data.shapes.ClassStyle`).
  * Context correlation is kept, as in natural photos: boat keeps water, train rail, horse grass,
    and a share `context_fraction` of the new classes get one of the same three contexts as their
    usual one. An image of a class with a context shows it with probability `p_context`; any
    other image shows a random context with probability `p_stray_context` (the WSSS generator's
    `synthetic.p_context` / `p_stray_context` by default). A context is thus shared by several
    classes (ImageNet's water is under boats, fish and ducks) but is still most of its classes'
    images' background.
  * Distractors: the generator's background blobs and occluding poles; no second class object,
    so the single label is exact.

Images are rendered with the WSSS generator's own pieces (`shapes.rasterise`, `paint_context`,
`synthetic._affine`, `synthetic._texture`, its background, noise, blur and JPEG settings). Each
image has its own RNG seeded by (seed, split code, index) with split codes 101/102, which the WSSS
generator (codes 1-3) never uses, so no corpus image is a WSSS image whatever the seeds; the WSSS
generator itself is not touched (its parameters and outputs are unchanged).

Layout (ImageNet's): `<root>/<split>/<class name>/<id>.jpg` for split train / val, `<split>.txt`
("<relative path> <class index>" per line) and `manifest.json` declaring the classes, each
class's usual context and the context rates measured on the written images.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pipeline.data.shapes import (
    CLASS_STYLES,
    CONTEXT_NAMES,
    CONTEXT_OF_CLASS,
    ClassStyle,
    hsv_to_rgb,
    paint_context,
    rasterise,
    smooth_noise,
)
from pipeline.data.synthetic import _affine, _texture, background
from pipeline.errors import PipelineError

# RNG stream namespaces: the WSSS generator seeds images with (seed, 1|2|3, index).
CORPUS_SPLIT_CODES = {"train": 101, "val": 102}
_CLASS_CODE = 100  # (seed, 100, k): the k-th new class's style
PATTERNS = ("stripes", "checker", "dots", "noise", "gradient")
# A context counts as shown when it covers at least this share of the image.
_MIN_CONTEXT_SHARE = 0.02


@dataclass(frozen=True)
class CorpusSpec:
    seed: int = 1
    num_new_classes: int = 30
    wsss_classes: bool = True
    train_per_class: int = 80
    val_per_class: int = 20
    min_size: int = 40
    max_size: int = 56
    object_scale: tuple[float, float] = (0.45, 0.75)  # object height / image side (one dominant object)
    context_fraction: float = 0.4  # share of new classes with a usual context
    p_context: float = 0.8  # P(usual context shown | class has one); synthetic.p_context
    p_stray_context: float = 0.08  # P(a random context | no usual context shown); synthetic.p_stray_context
    p_occluder: float = 0.25
    p_distractor: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.05)
    p_blur: float = 0.3
    jpeg_quality: int = 90

    @classmethod
    def from_config(cls, cfg: dict, key: str = "pretrain.corpus") -> CorpusSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise PipelineError(f"config key {key}.{sorted(unknown)[0]}: unknown corpus parameter")
        spec = cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()})
        spec.validate(key)
        return spec

    def validate(self, key: str = "pretrain.corpus") -> None:
        for name in ("num_new_classes", "train_per_class", "val_per_class"):
            if getattr(self, name) < 0:
                raise PipelineError(f"config key {key}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise PipelineError(f"config key {key}.num_new_classes: the corpus needs at least 2 classes")
        if self.train_per_class < 1:
            raise PipelineError(f"config key {key}.train_per_class: must be >= 1")
        if self.min_size < 32 or self.max_size < self.min_size:
            raise PipelineError(f"config key {key}.min_size/max_size: need 32 <= min_size <= max_size")
        for name in ("context_fraction", "p_context", "p_stray_context", "p_occluder", "p_distractor", "p_blur"):
            if not 0 <= getattr(self, name) <= 1:
                raise PipelineError(f"config key {key}.{name}: must lie in [0, 1]")

    @property
    def num_classes(self) -> int:
        return self.num_new_classes + (len(CLASS_STYLES) if self.wsss_classes else 0)


@dataclass(frozen=True)
class CorpusClass:
    name: str
    style: ClassStyle
    context: int | None  # 1-based into CONTEXT_NAMES
    source: str  # wsss | new


def _random_parts(rng: np.random.Generator) -> tuple:
    """A random silhouette in the unit box: a body (ellipse, box or polygon) and 1-4 appendages."""
    kind = rng.choice(["ellipse", "rect", "poly"])
    if kind == "ellipse":
        parts = [("ellipse", (0.0, 0.0, float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.3, 0.8))))]
    elif kind == "rect":
        hw, hh = float(rng.uniform(0.35, 1.0)), float(rng.uniform(0.3, 0.9))
        parts = [("poly", [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)])]
    else:
        n = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(0.5, 1.0, n)
        parts = [("poly", [(float(r * math.cos(a)), float(r * math.sin(a))) for a, r in zip(ang, rad, strict=True)])]
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = (float(v) for v in rng.uniform(-0.9, 0.9, 2))
        a, b = (float(v) for v in rng.uniform(0.08, 0.35, 2))
        if rng.random() < 0.5:
            parts.append(("ellipse", (cx, cy, a, b)))
        else:
            parts.append(("poly", [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy + b), (cx - a, cy + b)]))
    return tuple(parts)


def new_class(spec: CorpusSpec, k: int) -> CorpusClass:
    """The k-th new class; it depends only on (seed, k), not on how many classes there are."""
    rng = np.random.default_rng([spec.seed, _CLASS_CODE, k])
    lo_s, lo_v = rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.5)
    style = ClassStyle(
        f"shape{k:03d}", _random_parts(rng), float(rng.uniform(0.5, 2.0)), float(rng.random()),
        float(rng.uniform(0.02, 0.1)), str(rng.choice(PATTERNS)),
        (float(lo_s), float(min(1.0, lo_s + rng.uniform(0.3, 0.5)))),
        (float(lo_v), float(min(1.0, lo_v + rng.uniform(0.3, 0.5)))),
    )
    context = int(rng.integers(1, len(CONTEXT_NAMES) + 1)) if rng.random() < spec.context_fraction else None
    return CorpusClass(style.name, style, context, "new")


def corpus_classes(spec: CorpusSpec) -> list[CorpusClass]:
    """The WSSS classes with their contexts (when included), then the new classes."""
    out = []
    if spec.wsss_classes:
        for style in CLASS_STYLES:
            ctx = CONTEXT_OF_CLASS.get(style.name)
            out.append(CorpusClass(style.name, style, CONTEXT_NAMES.index(ctx) + 1 if ctx else None, "wsss"))
    out += [new_class(spec, k) for k in range(spec.num_new_classes)]
    return out


def render(spec: CorpusSpec, classes: list[CorpusClass], split: str, index: int) -> tuple[np.ndarray, int, list[int]]:
    """Image `index` of `split`: (rgb uint8 HxWx3, class index, contexts shown (1-based)).
    Classes are balanced: image i shows class i mod K."""
    label = index % len(classes)
    cls = classes[label]
    rng = np.random.default_rng([spec.seed, CORPUS_SPLIT_CODES[split], index])
    h, w = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, size=2))
    size = (h, w)
    img = background(size, rng)
    context_map = np.zeros(size, np.uint8)

    ctx = None
    if cls.context is not None and rng.random() < spec.p_context:
        ctx = cls.context
    elif rng.random() < spec.p_stray_context:
        ctx = int(rng.integers(1, len(CONTEXT_NAMES) + 1))
    ground = h
    if ctx is not None:  # one context band across the image's lower part
        ground = int(h * rng.uniform(0.5, 0.7))
        region = np.zeros(size, bool)
        region[ground:] = True
        img = np.where(region[..., None], paint_context(CONTEXT_NAMES[ctx - 1], size, ground, rng), img)
        context_map[region] = ctx

    if rng.random() < spec.p_distractor:  # background clutter that is no class
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.05, 0.15) * min(h, w)
            blob = rasterise((("ellipse", (0, 0, 1, rng.uniform(0.5, 1))),), _affine(rng, (cx, cy), 2 * r, 1), size)
            tex = hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
            img = np.where(blob[..., None], tex[None, None] * (0.8 + 0.2 * smooth_noise(size, 8, rng)[..., None]), img)

    hgt = rng.uniform(*spec.object_scale) * min(h, w)
    cx = w * rng.uniform(0.35, 0.65)
    cy = ground + rng.uniform(-0.45, 0.1) * hgt if ctx is not None and ctx == cls.context else rng.uniform(0.35, 0.65) * h
    mask = rasterise(cls.style.parts, _affine(rng, (cx, cy), hgt, cls.style.aspect), size)
    img = np.where(mask[..., None], _texture(cls.style, size, rng), img)
    context_map[mask] = 0

    if rng.random() < spec.p_occluder:  # a pole in front of everything
        x0 = int(rng.integers(0, w - 3))
        pw = int(rng.integers(2, max(3, w // 12)))
        img[:, x0 : x0 + pw] = hsv_to_rgb(rng.random(), 0.1, rng.uniform(0.2, 0.6))
        context_map[:, x0 : x0 + pw] = 0
    img = img + rng.normal(0, rng.uniform(*spec.noise_std), img.shape)
    rgb = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if rng.random() < spec.p_blur:
        rgb = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))))
    shown = [int(c) for c in np.unique(context_map) if c and (context_map == c).mean() >= _MIN_CONTEXT_SHARE]
    return rgb, label, shown


def _split_sizes(spec: CorpusSpec) -> dict[str, int]:
    k = spec.num_classes
    return {"train": spec.train_per_class * k, "val": spec.val_per_class * k}


def context_rates(classes: list[CorpusClass], items: list[tuple[int, list[int]]]) -> dict:
    """Measured on (label, contexts shown) pairs: per class P(usual context shown), and over the
    images of classes without one (or not showing it) P(any context shown)."""
    n = np.zeros(len(classes), np.int64)
    usual = np.zeros(len(classes), np.int64)
    stray_n = stray = 0
    for label, shown in items:
        n[label] += 1
        ctx = classes[label].context
        if ctx is not None and ctx in shown:
            usual[label] += 1
        else:
            stray_n += 1
            stray += bool(shown)
    with_ctx = [i for i, c in enumerate(classes) if c.context is not None]
    per_class = {classes[i].name: (float(usual[i] / n[i]) if n[i] else None) for i in with_ctx}
    pooled = float(usual[with_ctx].sum() / max(n[with_ctx].sum(), 1)) if with_ctx else None
    return {"p_context_given_class": per_class, "p_context_pooled": pooled,
            "p_stray_context": float(stray / stray_n) if stray_n else None, "num_images": int(n.sum())}


def generate(spec: CorpusSpec, root: Path) -> dict:
    """Write the corpus under `root`; return the manifest."""
    classes = corpus_classes(spec)
    splits: dict = {}
    for split, count in _split_sizes(spec).items():
        lines, items = [], []
        for c in classes:
            (root / split / c.name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rgb, label, shown = render(spec, classes, split, i)
            rel = f"{split}/{classes[label].name}/pre_{split}_{i:06d}.jpg"
            Image.fromarray(rgb).save(root / rel, quality=spec.jpeg_quality)
            lines.append(f"{rel} {label}\n")
            items.append((label, shown))
        (root / f"{split}.txt").write_text("".join(lines))
        splits[split] = {"num_images": count, "list": f"{split}.txt", "context_rates": context_rates(classes, items)}
    manifest = {
        "kind": "pretrain_corpus",
        "layout": "<split>/<class name>/<id>.jpg; <split>.txt: '<path> <class index>' per line",
        "num_classes": len(classes),
        "classes": [{"index": i, "name": c.name, "source": c.source,
                     "context": CONTEXT_NAMES[c.context - 1] if c.context else None} for i, c in enumerate(classes)],
        "context_names": list(CONTEXT_NAMES),
        "splits": splits,
        "spec": asdict(spec),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def read_split(root: Path, split: str) -> list[tuple[Path, int]]:
    """(image path, class index) of a written split."""
    out = []
    for line in (Path(root) / f"{split}.txt").read_text().splitlines():
        rel, label = line.rsplit(" ", 1)
        out.append((Path(root) / rel, int(label)))
    return out
