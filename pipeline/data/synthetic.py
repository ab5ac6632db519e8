"""Synthetic co-occurrence dataset in PASCAL VOC's layout: the embedded default.

It reproduces the failure modes SeCo and CSD address:
  (a) object-context co-occurrence: boat/water, train/rail, horse/grass. The context is a
      textured background region, labelled background (0) in the ground truth;
  (b) object-object co-occurrence: horse+person, diningtable+chair, adjacent or overlapping;
  (c) single-label images exist for every class (a guaranteed minimum), but are a minority for
      the co-occurring classes;
  (d) appearance variation: per-image colour jitter, five texture families, affine shape
      jitter (scale, aspect, rotation, flip), occluding poles, distractor blobs, noise, blur
      and JPEG compression; VOC-style 255 "void" bands on object boundaries.

Besides train/val it writes a **decoupled** split in which contexts appear without their usual
objects, plus `ContextMaps/` (which context covers each pixel) so false activation on
contexts can be measured directly, and `cooccurrence.json` with the realised class x class and
class x context matrices. Each image is drawn from its own RNG seeded by (seed, split, index),
so the output does not depend on generation order.

The parameters below were fixed before any method was run; do not tune them per method.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pipeline.data.palette import write_index_png
from pipeline.data.shapes import (
    CLASS_STYLES,
    CONTEXT_NAMES,
    CONTEXT_OF_CLASS,
    PARTNER_OF_CLASS,
    ClassStyle,
    hsv_to_rgb,
    paint_context,
    pattern_field,
    rasterise,
    smooth_noise,
)
from pipeline.errors import PipelineError

CLASS_NAMES: tuple[str, ...] = ("background",) + tuple(s.name for s in CLASS_STYLES)
SPLIT_CODES = {"train": 1, "val": 2, "decoupled": 3}


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 0
    num_train: int = 240
    num_val: int = 80
    num_decoupled: int = 48
    min_size: int = 96
    max_size: int = 128
    p_num_objects: tuple[float, ...] = (0.5, 0.35, 0.15)  # P(1, 2, 3 primary classes)
    p_context: float = 0.8  # P(class's context present | class present)
    p_partner: float = 0.8  # P(partner present | primary with a partner present)
    p_stray_context: float = 0.08  # P(a random context without its class)
    min_single_label: int = 4  # guaranteed single-label train images per class
    object_scale: tuple[float, float] = (0.35, 0.6)  # object height / image side
    p_occluder: float = 0.25
    p_distractor: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.05)
    p_blur: float = 0.3
    jpeg_quality: int = 90
    boundary_width: int = 1
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_config(cls, cfg: dict, key: str = "synthetic") -> SyntheticSpec:
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = set(cfg) - known
        if unknown:
            raise PipelineError(f"config key {key}.{sorted(unknown)[0]}: unknown synthetic parameter")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}
        spec = cls(**values)
        spec.validate(key)
        return spec

    def validate(self, key: str = "synthetic") -> None:
        for name in ("num_train", "num_val", "num_decoupled", "min_size", "max_size", "min_single_label"):
            if getattr(self, name) < 0:
                raise PipelineError(f"config key {key}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.min_size < 32 or self.max_size < self.min_size:
            raise PipelineError(f"config key {key}.min_size/max_size: need 32 <= min_size <= max_size")
        if abs(sum(self.p_num_objects) - 1) > 1e-6 or min(self.p_num_objects) < 0:
            raise PipelineError(f"config key {key}.p_num_objects: must be probabilities summing to 1")
        for name in ("p_context", "p_partner", "p_stray_context", "p_occluder", "p_distractor", "p_blur"):
            if not 0 <= getattr(self, name) <= 1:
                raise PipelineError(f"config key {key}.{name}: must lie in [0, 1]")
        if self.num_train < self.min_single_label * (len(CLASS_NAMES) - 1):
            raise PipelineError(f"config key {key}.num_train: too small for min_single_label per class")


@dataclass
class ImagePlan:
    classes: list[int]  # primary classes (1-based)
    single_label: bool  # forced single label: no partner
    contexts: list[int]  # context ids (1-based into CONTEXT_NAMES)


def _class_id(name: str) -> int:
    return CLASS_NAMES.index(name)


def _context_id(name: str) -> int:
    return CONTEXT_NAMES.index(name) + 1


CONTEXT_TO_CLASS: dict[int, int] = {_context_id(x): _class_id(c) for c, x in CONTEXT_OF_CLASS.items()}
PARTNER_PAIRS: list[tuple[int, int]] = [(_class_id(a), _class_id(b)) for a, b in PARTNER_OF_CLASS.items()]


def _plan(spec: SyntheticSpec, split: str, index: int, rng: np.random.Generator) -> ImagePlan:
    n_fg = len(CLASS_NAMES) - 1
    if split == "decoupled":
        ctx = int(rng.integers(1, len(CONTEXT_NAMES) + 1))
        usual = CONTEXT_TO_CLASS[ctx]
        # Objects that neither own this context nor partner with its usual class.
        partners = {b for a, b in PARTNER_PAIRS if a == usual}
        pool = [c for c in range(1, n_fg + 1) if c != usual and c not in partners and c not in CONTEXT_TO_CLASS.values()]
        classes = [int(rng.choice(pool))] if rng.random() < 0.75 else []
        return ImagePlan(classes, True, [ctx])
    forced = split == "train" and index < spec.min_single_label * n_fg
    if forced:
        classes = [index % n_fg + 1]
    else:
        k = int(rng.choice(len(spec.p_num_objects), p=spec.p_num_objects)) + 1
        classes = sorted(int(c) for c in rng.choice(np.arange(1, n_fg + 1), size=k, replace=False))
    contexts = []
    for c in classes:
        name = CLASS_NAMES[c]
        if name in CONTEXT_OF_CLASS and rng.random() < spec.p_context:
            contexts.append(_context_id(CONTEXT_OF_CLASS[name]))
    if not contexts and rng.random() < spec.p_stray_context:
        contexts.append(int(rng.integers(1, len(CONTEXT_NAMES) + 1)))
    return ImagePlan(classes, forced, sorted(set(contexts)))


def _affine(rng: np.random.Generator, center: tuple[float, float], height: float, aspect: float) -> np.ndarray:
    sy = height / 2
    sx = sy * aspect * rng.uniform(0.85, 1.15)
    if rng.random() < 0.5:
        sx = -sx
    ang = rng.uniform(-0.2, 0.2)
    c, s = math.cos(ang), math.sin(ang)
    return np.array([[sx * c, -sy * s, center[0]], [sx * s, sy * c, center[1]]])


def _texture(style: ClassStyle, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    hue = style.hue + rng.uniform(-style.hue_jitter, style.hue_jitter)
    c1 = hsv_to_rgb(hue, rng.uniform(*style.sat), rng.uniform(*style.val))
    c2 = hsv_to_rgb(hue + rng.uniform(-0.08, 0.08), rng.uniform(*style.sat), rng.uniform(*style.val) * 0.6)
    t = pattern_field(style.pattern, size, rng)[..., None]
    return c1[None, None] * t + c2[None, None] * (1 - t)


def _boundary(label: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of a label change that touches an object (VOC's void band)."""
    edge = np.zeros(label.shape, dtype=bool)
    for axis in (0, 1):
        diff = np.diff(label, axis=axis) != 0
        fg = (np.take(label, range(1, label.shape[axis]), axis) > 0) | (
            np.take(label, range(label.shape[axis] - 1), axis) > 0
        )
        d = diff & fg
        if axis == 0:
            edge[1:] |= d
            edge[:-1] |= d
        else:
            edge[:, 1:] |= d
            edge[:, :-1] |= d
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A float RGB background: two random low-saturation colours blended by smooth noise."""
    bg_a = hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.4, 0.95))
    bg_b = hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.9))
    mix = smooth_noise(size, int(rng.integers(2, 6)), rng)[..., None]
    return bg_a[None, None] * mix + bg_b[None, None] * (1 - mix)


def render(spec: SyntheticSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Render one image. Returns (rgb uint8 HxWx3, label uint8 HxW, context uint8 HxW, classes)."""
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index])
    plan = _plan(spec, split, index, rng)
    h, w = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, size=2))
    size = (h, w)
    img = background(size, rng)
    label = np.zeros(size, np.uint8)
    context = np.zeros(size, np.uint8)

    # Several contexts share the ground band as vertical strips, one strip each.
    ground = h
    strip_of: dict[int, tuple[int, int]] = {}
    if plan.contexts:
        ground = int(h * rng.uniform(0.5, 0.7))
        cuts = np.linspace(0, w, len(plan.contexts) + 1).round().astype(int)
        for ctx, x0, x1 in zip(plan.contexts, cuts[:-1], cuts[1:], strict=True):
            region = np.zeros(size, bool)
            region[ground:, x0:x1] = True
            img = np.where(region[..., None], paint_context(CONTEXT_NAMES[ctx - 1], size, ground, rng), img)
            context[region] = ctx
            strip_of[ctx] = (int(x0), int(x1))

    if rng.random() < spec.p_distractor:  # background clutter that is not any class
        n = int(rng.integers(1, 4))
        for _ in range(n):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.05, 0.15) * min(h, w)
            blob = rasterise((("ellipse", (0, 0, 1, rng.uniform(0.5, 1))),), _affine(rng, (cx, cy), 2 * r, 1), size)
            tex = hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
            img = np.where(blob[..., None], tex[None, None] * (0.8 + 0.2 * smooth_noise(size, 8, rng)[..., None]), img)

    objects: list[tuple[int, float, float, float]] = []  # class, cx, cy, height
    side = min(h, w)
    slots = np.linspace(0.2, 0.8, max(len(plan.classes), 1)) if len(plan.classes) > 1 else [0.5]
    for slot, c in zip(slots, plan.classes, strict=False):
        hgt = rng.uniform(*spec.object_scale) * side
        cx = w * float(np.clip(slot + rng.uniform(-0.1, 0.1), 0.15, 0.85))
        own = CONTEXT_OF_CLASS.get(CLASS_NAMES[c])
        ctx = _context_id(own) if own else None
        if ctx in strip_of:  # sit the object on its own context strip
            x0, x1 = strip_of[ctx]
            cx = rng.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0))
            cy = ground + rng.uniform(-0.45, 0.1) * hgt
        else:
            cy = rng.uniform(0.3, 0.7) * h
        objects.append((c, cx, cy, hgt))
        partner = dict(PARTNER_PAIRS).get(c)
        if partner is not None and not plan.single_label and rng.random() < spec.p_partner:
            ph = hgt * rng.uniform(0.7, 1.0)
            if rng.random() < 0.5:  # rider / item on top, overlapping
                px, py = cx + rng.uniform(-0.15, 0.15) * hgt, cy - 0.55 * hgt
            else:  # adjacent, touching
                sign = 1 if rng.random() < 0.5 else -1
                px, py = cx + sign * rng.uniform(0.55, 0.8) * hgt, cy + rng.uniform(-0.1, 0.1) * hgt
            objects.append((partner, float(np.clip(px, 0.15 * w, 0.85 * w)), float(np.clip(py, 0.3 * h, 0.8 * h)), ph))

    for c, cx, cy, hgt in objects:
        style = CLASS_STYLES[c - 1]
        mask = rasterise(style.parts, _affine(rng, (cx, cy), hgt, style.aspect), size)
        if not mask.any():
            continue
        img = np.where(mask[..., None], _texture(style, size, rng), img)
        label[mask] = c

    if rng.random() < spec.p_occluder:  # a pole in front of everything, labelled background
        x0 = int(rng.integers(0, w - 3))
        pw = int(rng.integers(2, max(3, w // 12)))
        img[:, x0 : x0 + pw] = hsv_to_rgb(rng.random(), 0.1, rng.uniform(0.2, 0.6))
        label[:, x0 : x0 + pw] = 0

    present = sorted(int(c) for c in np.unique(label) if c != 0)
    if spec.boundary_width > 0:
        label[_boundary(label, spec.boundary_width)] = 255
    img = img + rng.normal(0, rng.uniform(*spec.noise_std), img.shape)
    rgb = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if rng.random() < spec.p_blur:
        rgb = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))))
    return rgb, label, context, present


def _split_sizes(spec: SyntheticSpec) -> dict[str, int]:
    return {"train": spec.num_train, "val": spec.num_val, "decoupled": spec.num_decoupled}


def cooccurrence_stats(per_split: dict[str, list[tuple[list[int], list[int]]]]) -> dict:
    """Realised statistics: per split, image counts per class, class x class, class x context."""
    n_fg = len(CLASS_NAMES) - 1
    out: dict = {"class_names": list(CLASS_NAMES), "context_names": list(CONTEXT_NAMES), "splits": {}}
    for split, items in per_split.items():
        cc = np.zeros((n_fg, n_fg), np.int64)  # images containing both (diagonal: images containing c)
        cx = np.zeros((n_fg, len(CONTEXT_NAMES)), np.int64)
        single = np.zeros(n_fg, np.int64)
        for classes, contexts in items:
            idx = [c - 1 for c in classes]
            for a in idx:
                for b in idx:
                    cc[a, b] += 1
                for x in contexts:
                    cx[a, x - 1] += 1
            if len(idx) == 1:
                single[idx[0]] += 1
        count = np.diag(cc)

        def ratio(num: int, den: int) -> float | None:
            return float(num / den) if den else None  # JSON has no NaN

        p_ctx = {c: ratio(cx[_class_id(c) - 1, _context_id(x) - 1], count[_class_id(c) - 1]) for c, x in CONTEXT_OF_CLASS.items()}
        p_partner = {f"{CLASS_NAMES[a]}+{CLASS_NAMES[b]}": ratio(cc[a - 1, b - 1], count[a - 1]) for a, b in PARTNER_PAIRS}
        single_frac = {CLASS_NAMES[i + 1]: ratio(single[i], count[i]) for i in range(n_fg)}
        out["splits"][split] = {
            "num_images": len(items),
            "class_image_counts": {CLASS_NAMES[i + 1]: int(count[i]) for i in range(n_fg)},
            "single_label_counts": {CLASS_NAMES[i + 1]: int(single[i]) for i in range(n_fg)},
            "single_label_fraction": single_frac,
            "class_class": cc.tolist(),
            "class_context": cx.tolist(),
            "p_context_given_class": p_ctx,
            "p_partner_given_class": p_partner,
        }
    return out


def generate(spec: SyntheticSpec, root: Path) -> dict:
    """Write the dataset under `root` (VOC2012-style); return the statistics dict."""
    dirs = {k: root / k for k in ("JPEGImages", "SegmentationClassAug", "ContextMaps", "ImageSets/Segmentation")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    per_split: dict[str, list[tuple[list[int], list[int]]]] = {}
    for split, n in _split_sizes(spec).items():
        ids, items = [], []
        for i in range(n):
            rgb, label, context, present = render(spec, split, i)
            image_id = f"syn_{split}_{i:05d}"
            Image.fromarray(rgb).save(dirs["JPEGImages"] / f"{image_id}.jpg", quality=spec.jpeg_quality)
            write_index_png(dirs["SegmentationClassAug"] / f"{image_id}.png", label)
            write_index_png(dirs["ContextMaps"] / f"{image_id}.png", context)
            ids.append(image_id)
            items.append((present, sorted(int(x) for x in np.unique(context) if x)))
        (dirs["ImageSets/Segmentation"] / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        per_split[split] = items
    stats = cooccurrence_stats(per_split)
    meta = {
        "kind": "synthetic",
        "class_names": list(CLASS_NAMES),
        "context_names": list(CONTEXT_NAMES),
        "context_to_class": {str(k): v for k, v in CONTEXT_TO_CLASS.items()},
        "partner_pairs": PARTNER_PAIRS,
        "spec": {k: v for k, v in asdict(spec).items() if k != "extra"},
    }
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2))
    (root / "cooccurrence.json").write_text(json.dumps(stats, indent=2))
    return stats
