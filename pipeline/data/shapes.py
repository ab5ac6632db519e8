"""Class shapes, textures and context painters for the synthetic co-occurrence dataset.

Every shape is a list of primitives in a unit box [-1, 1]^2 (x right, y down); the generator
maps them through a random affine transform and rasterises them with Pillow. Colours are HSV
ranges so each class has a characteristic but variable appearance.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# ("poly", [(x, y), ...]) or ("ellipse", (cx, cy, rx, ry))
Primitive = tuple[str, object]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Primitive:
    return ("poly", [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _ell(cx: float, cy: float, rx: float, ry: float) -> Primitive:
    return ("ellipse", (cx, cy, rx, ry))


def _poly(*pts: tuple[float, float]) -> Primitive:
    return ("poly", list(pts))


@dataclass(frozen=True)
class ClassStyle:
    name: str
    parts: tuple[Primitive, ...]
    aspect: float  # width / height of the unit box when drawn
    hue: float
    hue_jitter: float
    pattern: str  # stripes | checker | dots | noise | gradient
    sat: tuple[float, float] = (0.45, 0.9)
    val: tuple[float, float] = (0.45, 0.95)


CLASS_STYLES: tuple[ClassStyle, ...] = (
    ClassStyle(
        "boat",
        (_poly((-1, 0.2), (1, 0.2), (0.7, 0.75), (-0.7, 0.75)), _poly((-0.1, 0.15), (-0.1, -0.95), (0.65, 0.15))),
        1.2, 0.02, 0.04, "stripes",
    ),
    ClassStyle(
        "train",
        (_rect(-1, -0.45, 1, 0.55), _rect(0.45, -0.9, 1, -0.45), _ell(-0.6, 0.6, 0.18, 0.18), _ell(0.6, 0.6, 0.18, 0.18)),
        2.2, 0.62, 0.05, "checker",
    ),
    ClassStyle(
        "horse",
        (
            _ell(0, 0, 0.65, 0.32), _poly((0.45, -0.1), (0.75, -0.7), (0.95, -0.6), (0.65, 0.05)),
            _ell(0.9, -0.68, 0.2, 0.12), _rect(-0.55, 0.15, -0.42, 1), _rect(-0.3, 0.15, -0.17, 1),
            _rect(0.25, 0.15, 0.38, 1), _rect(0.45, 0.15, 0.58, 1),
        ),
        1.3, 0.08, 0.03, "noise", (0.5, 0.8), (0.3, 0.6),
    ),
    ClassStyle(
        "person",
        (
            _ell(0, -0.78, 0.22, 0.2), _rect(-0.32, -0.56, 0.32, 0.3), _rect(-0.3, 0.3, -0.06, 1),
            _rect(0.06, 0.3, 0.3, 1), _rect(-0.55, -0.5, -0.35, 0.15), _rect(0.35, -0.5, 0.55, 0.15),
        ),
        0.45, 0.75, 0.08, "gradient",
    ),
    ClassStyle(
        "bird",
        (_ell(0, 0.1, 0.55, 0.3), _poly((-0.3, 0), (0.2, 0), (-0.2, -0.9)), _ell(0.55, -0.15, 0.2, 0.18), _poly((0.7, -0.2), (1, -0.1), (0.7, -0.05))),
        1.0, 0.15, 0.05, "dots",
    ),
    ClassStyle(
        "car",
        (_rect(-1, -0.1, 1, 0.45), _poly((-0.55, -0.1), (-0.35, -0.6), (0.4, -0.6), (0.6, -0.1)), _ell(-0.6, 0.5, 0.24, 0.24), _ell(0.6, 0.5, 0.24, 0.24)),
        1.8, 0.0, 0.5, "gradient", (0.6, 0.95), (0.5, 0.95),
    ),
    ClassStyle(
        "cat",
        (_ell(0, 0.35, 0.6, 0.42), _ell(0, -0.42, 0.34, 0.3), _poly((-0.32, -0.55), (-0.25, -1), (-0.05, -0.65)), _poly((0.32, -0.55), (0.25, -1), (0.05, -0.65)), _rect(0.5, 0.5, 0.95, 0.62)),
        0.9, 0.1, 0.1, "stripes", (0.1, 0.6), (0.35, 0.8),
    ),
    ClassStyle(
        "bottle",
        (_rect(-0.38, -0.2, 0.38, 1), _poly((-0.38, -0.2), (-0.15, -0.45), (0.15, -0.45), (0.38, -0.2)), _rect(-0.14, -0.95, 0.14, -0.44)),
        0.4, 0.38, 0.06, "noise",
    ),
    ClassStyle(
        "chair",
        (_rect(-0.7, 0, 0.7, 0.2), _rect(-0.7, -1, -0.5, 0.05), _rect(-0.7, 0.2, -0.55, 1), _rect(0.55, 0.2, 0.7, 1), _rect(-0.5, -0.9, -0.1, -0.3)),
        0.8, 0.85, 0.06, "checker",
    ),
    ClassStyle(
        "diningtable",
        (_rect(-1, -0.35, 1, -0.1), _rect(-0.9, -0.1, -0.75, 1), _rect(0.75, -0.1, 0.9, 1), _ell(0, -0.42, 0.25, 0.1)),
        2.0, 0.05, 0.04, "stripes", (0.3, 0.6), (0.3, 0.7),
    ),
)

# Contexts: background regions (labelled background in the GT) that a class usually sits on.
CONTEXT_NAMES: tuple[str, ...] = ("water", "rail", "grass")
CONTEXT_OF_CLASS: dict[str, str] = {"boat": "water", "train": "rail", "horse": "grass"}
# Object-object co-occurrence: the partner appears next to / overlapping the primary.
PARTNER_OF_CLASS: dict[str, str] = {"horse": "person", "diningtable": "chair"}


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def rasterise(parts: tuple[Primitive, ...], affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Draw primitives mapped by the 2x3 `affine` onto an HxW boolean mask."""
    h, w = size
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for kind, geom in parts:
        if kind == "poly":
            pts = np.asarray(geom, dtype=np.float64)
        else:
            cx, cy, rx, ry = geom  # type: ignore[misc]
            t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
            pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
        mapped = pts @ affine[:, :2].T + affine[:, 2]
        draw.polygon([tuple(p) for p in mapped], fill=255)
    return np.asarray(img) > 127


def pattern_field(pattern: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An HxW field in [0, 1] that mixes a class's two colours."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if pattern == "stripes":
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(4, 10)
        return 0.5 + 0.5 * np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
    if pattern == "checker":
        cell = int(rng.integers(3, 8))
        return (((xx // cell) + (yy // cell)) % 2).astype(np.float32)
    if pattern == "dots":
        cell = rng.uniform(5, 9)
        fx, fy = (xx % cell) - cell / 2, (yy % cell) - cell / 2
        return (fx**2 + fy**2 < (cell / 3.5) ** 2).astype(np.float32)
    if pattern == "gradient":
        ang = rng.uniform(0, 2 * math.pi)
        g = xx * math.cos(ang) + yy * math.sin(ang)
        return (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    if pattern == "noise":
        return smooth_noise(size, cells=int(rng.integers(6, 14)), rng=rng)
    raise ValueError(f"unknown pattern {pattern!r}")


def smooth_noise(size: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    h, w = size
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    up = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 255.0


def paint_context(name: str, size: tuple[int, int], top: int, rng: np.random.Generator) -> np.ndarray:
    """Return an HxWx3 texture for a context region (only rows >= top are used)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if name == "water":
        base = hsv_to_rgb(rng.uniform(0.53, 0.6), rng.uniform(0.5, 0.85), rng.uniform(0.55, 0.9))
        f = rng.uniform(0.5, 0.9)
        waves = 0.5 + 0.5 * np.sin(yy * f + 1.5 * np.sin(xx * rng.uniform(0.1, 0.25)))
        tex = base[None, None] * (0.75 + 0.35 * waves[..., None])
    elif name == "rail":
        gravel = smooth_noise(size, cells=max(8, w // 3), rng=rng)
        tex = np.repeat((0.35 + 0.3 * gravel)[..., None], 3, 2) * hsv_to_rgb(0.08, 0.15, 1.0)[None, None]
        band = max(h - top, 1)
        for frac in (0.3, 0.7):
            r = top + int(frac * band)
            tex[max(r - 1, 0) : r + 1] = (0.15, 0.12, 0.1)
        ties = ((xx + rng.uniform(0, 8)) % 8) < 2
        tex[ties & (yy >= top)] *= 0.6
    elif name == "grass":
        base = hsv_to_rgb(rng.uniform(0.24, 0.33), rng.uniform(0.5, 0.85), rng.uniform(0.4, 0.75))
        blades = 0.5 + 0.5 * np.sin(xx * rng.uniform(1.2, 2.2) + 0.8 * smooth_noise(size, 10, rng) * 6)
        tex = base[None, None] * (0.7 + 0.4 * blades[..., None])
    else:
        raise ValueError(f"unknown context {name!r}")
    return np.clip(tex, 0, 1).astype(np.float32)
