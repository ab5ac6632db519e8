"""Image transforms shared by the training stages (IRN / SeCo conventions), numpy in, numpy out."""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 HxWx3 with ImageNet mean/std (both papers use these)."""
    return (img.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def resize(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize to (H, W); bilinear for images, nearest for label maps."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.NEAREST if nearest else Image.BILINEAR))


def random_resize_long(img: np.ndarray, lo: int, hi: int, rng: np.random.Generator,
                       mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """IRN: rescale so the long side is uniform in [lo, hi]."""
    target = int(rng.integers(lo, hi + 1))
    h, w = img.shape[:2]
    s = target / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return resize(img, size), (resize(mask, size, nearest=True) if mask is not None else None)


def random_crop(img: np.ndarray, crop: int, rng: np.random.Generator, mask: np.ndarray | None = None,
                pad_value: float = 0.0, mask_pad: int = 255) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """IRN's random crop: pad to at least crop x crop, then a random window.

    Returns (crop, mask crop, box) where box = (y0, x0, y1, x1) is the valid image region inside
    the crop (SeCo's img_box).
    """
    h, w = img.shape[:2]
    ph, pw = max(crop, h), max(crop, w)
    # Random offsets both for the placement of a small image and for the window in a large one.
    oy = int(rng.integers(0, ph - h + 1))
    ox = int(rng.integers(0, pw - w + 1))
    canvas = np.full((ph, pw, img.shape[2]), pad_value, img.dtype)
    canvas[oy : oy + h, ox : ox + w] = img
    mcanvas = None
    if mask is not None:
        mcanvas = np.full((ph, pw), mask_pad, mask.dtype)
        mcanvas[oy : oy + h, ox : ox + w] = mask
    cy = int(rng.integers(0, ph - crop + 1))
    cx = int(rng.integers(0, pw - crop + 1))
    out = canvas[cy : cy + crop, cx : cx + crop]
    mout = mcanvas[cy : cy + crop, cx : cx + crop] if mcanvas is not None else None
    box = (max(oy - cy, 0), max(ox - cx, 0), min(oy + h - cy, crop), min(ox + w - cx, crop))
    return out, mout, box


def hflip(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:, ::-1])
