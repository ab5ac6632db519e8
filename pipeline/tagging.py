"""SeCo's "separate" step (utils/camutils.py: cam_to_roi_mask, assign_csc_tags) on CAM seeds.

ROI: the max over present classes' CAMs v and its class; class+1 where v > high, -1
(uncertain) where low < v <= high, 0 (background) where v <= low.

Patches: K square patches centred on uncertain pixels that lie far enough from the border
for the patch to fit; when fewer than K exist, any interior pixel. Tags:
  * global tag: -1 if the confident ROI holds >= 2 classes; c if exactly one (and the image's
    uncertain pixels are relabelled c); 1 if none (the official initial value, kept).
  * local tag: background (0) if the patch's foreground share is <= `bg_ratio` (0.2);
    otherwise the single confident class in the patch, or -1 (uncertain) for 0 or >= 2.

The official code measures the foreground share as sum(u)/area with u = 1 at uncertain pixels
and u = the class index at confident pixels, i.e. it sums class indices instead of counting
pixels (rule "index_sum"); "count" counts non-background pixels as intended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNCERTAIN = -1
BG_RULES = ("count", "index_sum")


@dataclass(frozen=True)
class TagParams:
    high: float = 0.7
    low: float = 0.25
    num_patches: int = 10
    patch_size: int = 64
    bg_ratio: float = 0.2
    bg_rule: str = "count"


def roi_map(scores: np.ndarray, classes: np.ndarray, high: float, low: float) -> np.ndarray:
    """int16 H x W: class id where confident, -1 uncertain, 0 background."""
    if scores.shape[0] == 0:
        return np.zeros(scores.shape[1:], np.int16)
    v = scores.max(0)
    cls = np.asarray(classes, np.int16)[scores.argmax(0)]
    roi = np.where(v > high, cls, np.where(v > low, UNCERTAIN, 0)).astype(np.int16)
    return roi


def global_tag(roi: np.ndarray) -> tuple[int, np.ndarray]:
    """(tag, roi with uncertain relabelled when exactly one confident class exists)."""
    present = [int(c) for c in np.unique(roi) if c > 0]
    if len(present) >= 2:
        return UNCERTAIN, roi
    if len(present) == 1:
        roi = roi.copy()
        roi[roi == UNCERTAIN] = present[0]
        return present[0], roi
    return 1, roi  # official initial value for images without confident foreground


def patch_centres(roi: np.ndarray, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """K (y, x) centres of size x size patches, preferring uncertain pixels, all patches inside."""
    h, w = roi.shape
    half = size // 2
    y0, y1 = half, h - (size - half)
    x0, x1 = half, w - (size - half)
    if y1 < y0 or x1 < x0:
        raise ValueError(f"patch size {size} does not fit an image of {h}x{w}")
    interior = np.zeros_like(roi, dtype=bool)
    interior[y0 : y1 + 1, x0 : x1 + 1] = True
    cand = np.argwhere(interior & (roi == UNCERTAIN))
    if len(cand) < k:
        cand = np.argwhere(interior)
    pick = rng.permutation(len(cand))[:k]
    if len(pick) < k:  # tiny images: repeat centres rather than return fewer patches
        pick = np.resize(pick, k)
    return cand[pick]


def local_tag(patch_roi: np.ndarray, params: TagParams, raw_patch: np.ndarray | None = None) -> int:
    """Tag of one patch. `patch_roi` is after the global relabelling; the foreground share is
    taken on `raw_patch` (before it), where uncertain pixels count 1 as in the official code."""
    raw = patch_roi if raw_patch is None else raw_patch
    area = patch_roi.size
    if params.bg_rule == "index_sum":
        u = np.where(raw == UNCERTAIN, 1, raw).astype(np.int64)
        fg_share = u.sum() / area
    else:
        fg_share = np.count_nonzero(raw) / area
    if fg_share <= params.bg_ratio:
        return 0
    present = [int(c) for c in np.unique(patch_roi) if c > 0]
    return present[0] if len(present) == 1 else UNCERTAIN


def tag_image(scores: np.ndarray, classes: np.ndarray, params: TagParams,
              rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """(global tag, K x 5 int32 rows [y0, x0, y1, x1, tag]) for one image's full-res CAMs."""
    raw = roi_map(scores, classes, params.high, params.low)
    gtag, roi = global_tag(raw)
    centres = patch_centres(roi, params.num_patches, params.patch_size, rng)
    rows = []
    half = params.patch_size // 2
    for cy, cx in centres:
        y0, x0 = int(cy) - half, int(cx) - half
        y1, x1 = y0 + params.patch_size, x0 + params.patch_size
        rows.append((y0, x0, y1, x1, local_tag(roi[y0:y1, x0:x1], params, raw[y0:y1, x0:x1])))
    return gtag, np.asarray(rows, np.int32).reshape(-1, 5)


def tag_correct(gt_patch: np.ndarray, tag: int, bg_max_fg: float = 0.2) -> bool | None:
    """Tag accuracy against ground truth; None for uncertain tags (not scored).

    Class tag: the patch's majority GT class (255 ignored, background included) equals it.
    Background tag: the GT foreground share of the patch is <= bg_max_fg.
    """
    valid = gt_patch[gt_patch != 255]
    if tag == UNCERTAIN or valid.size == 0:
        return None
    if tag == 0:
        return float(np.count_nonzero(valid)) / valid.size <= bg_max_fg
    return int(np.bincount(valid).argmax()) == tag
