"""SeCo's "separate" step: patch positions and tags (`assign_csc_tags`), and cutting the local crops
for the student (training view) and the L-teacher (strong view). One implementation serves the
online tags of training (the official behaviour) and the offline tag_patches stage, which runs
the same `assign_tags` on the ROI of the baseline's full-resolution CAM seeds (`tag_image`).

Online tags (the official behaviour) are recomputed every iteration from the ROI mask of the
model's own CAMs (`pseudo.roi_mask`): 0 background, c class, -1 uncertain, 255 outside the crop.

* Positions: top-left corners of K size-s crops whose centres are uncertain pixels of the
  interior (where the crop fits); with fewer than K such pixels, any interior pixel. The official
  code calls torch.manual_seed(0) before drawing the permutation of each image ("fixed_seed"),
  so positions depend only on the candidate count; "random" draws them from the training RNG.
* Global tag (both global views): -1 if the confident ROI holds >= 2 classes; c if exactly one
  (and the uncertain pixels become c for the local tags); `empty_global_tag` if none (official 1).
* Local tag: 0 if the patch's foreground share <= threshold; else its single confident class, or
  -1 for none or several. The share is sum(u)/s^2 with u = class index at confident pixels and 1
  at uncertain ones, taken before the relabelling ("index_sum", official), or the plain count of
  non-background pixels ("count").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.labels import IGNORE_INDEX, UNCERTAIN

BG_RULES = ("index_sum", "count")
POSITION_MODES = ("fixed_seed", "random")


def assign_tags(roi: torch.Tensor, num_crops: int, crop_size: int, threshold: float = 0.2,
                bg_rule: str = "index_sum", empty_global_tag: int = 1,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions B x K x 2 top-left (y, x), tags B x (K+2) [global, global, local 1..K]).

    `generator` None reproduces the official per-image reseeding with 0.
    """
    if bg_rule not in BG_RULES:
        raise ValueError(f"unknown background rule {bg_rule!r}")
    roi = roi.detach().cpu().long()
    b, h, w = roi.shape
    m = crop_size // 2
    if h - 2 * m < 1 or w - 2 * m < 1:
        raise ValueError(f"local crop {crop_size} does not fit a {h}x{w} training crop")
    positions = torch.zeros(b, num_crops, 2, dtype=torch.long)
    tags = torch.ones(b, num_crops + 2, dtype=torch.long)
    area = float(crop_size * crop_size)
    for i in range(b):
        r = torch.where(roi[i] == IGNORE_INDEX, 0, roi[i])
        uncertain = r == UNCERTAIN
        conf = torch.where(uncertain, 0, r)
        cand = torch.nonzero(r[m : h - m, m : w - m] < 0)
        if cand.shape[0] < num_crops:
            cand = torch.nonzero(conf[m : h - m, m : w - m] >= 0)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        pick = torch.randperm(cand.shape[0], generator=gen)[:num_crops]
        if pick.numel() < num_crops:  # tiny crops: repeat positions rather than return fewer
            pick = pick.repeat(num_crops // max(pick.numel(), 1) + 1)[:num_crops]
        positions[i] = cand[pick]
        classes = [int(c) for c in torch.unique(conf) if c != 0]
        share_map = conf + uncertain.long() if bg_rule == "index_sum" else (r != 0).long()
        if len(classes) >= 2:
            tags[i, :2] = UNCERTAIN
        elif len(classes) == 1:
            tags[i, :2] = classes[0]
            conf = conf + uncertain.long() * classes[0]
        else:
            tags[i, :2] = empty_global_tag
        for k, (y, x) in enumerate(positions[i].tolist()):
            if share_map[y : y + crop_size, x : x + crop_size].sum().item() / area <= threshold:
                tags[i, k + 2] = 0
                continue
            present = [int(c) for c in torch.unique(conf[y : y + crop_size, x : x + crop_size]) if c != 0]
            tags[i, k + 2] = present[0] if len(present) == 1 else UNCERTAIN
    return positions, tags


def cut_crops(images: torch.Tensor, positions: torch.Tensor, crop_size: int) -> torch.Tensor:
    """(K*B) x 3 x s x s crops at top-left `positions` (B x K x 2), crop-major order."""
    pos = positions.tolist()
    crops = [images[i, :, y : y + crop_size, x : x + crop_size]
             for k in range(positions.shape[1]) for i in range(len(pos)) for y, x in [pos[i][k]]]
    return torch.stack(crops)


def crops_from_boxes(images: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """(K*B) x 3 x s x s bilinear crops of float boxes (B x K x 4, [y0, x0, y1, x1] pixel edges),
    resized to s x s, crop-major order (offline tags: boxes vary in size with the rescale)."""
    b, k = boxes.shape[:2]
    h, w = images.shape[-2:]
    bx = boxes.to(images.device, torch.float32).transpose(0, 1).reshape(k * b, 4)  # crop-major
    y0, x0, y1, x1 = (2 * bx[:, 0] / h - 1, 2 * bx[:, 1] / w - 1, 2 * bx[:, 2] / h - 1, 2 * bx[:, 3] / w - 1)
    theta = torch.zeros(k * b, 2, 3, device=images.device)
    theta[:, 0, 0] = (x1 - x0) / 2
    theta[:, 0, 2] = (x1 + x0) / 2
    theta[:, 1, 1] = (y1 - y0) / 2
    theta[:, 1, 2] = (y1 + y0) / 2
    grid = F.affine_grid(theta, [k * b, images.shape[1], out_size, out_size], align_corners=False)
    src = images.float().repeat(k, 1, 1, 1)  # row j*b + i is image i
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(images.dtype)


def map_boxes(rows: np.ndarray, scale: tuple[float, float], flipped_width: float | None,
              offset: tuple[int, int], crop: int, min_visible: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Offline patch rows [y0, x0, y1, x1, tag] (original pixels) -> (K x 4 float boxes in crop
    pixels, K tags) through rescale (sy, sx), horizontal flip of the rescaled image of width
    `flipped_width` (None: no flip) and the crop offset (crop coordinate of rescaled pixel (0, 0)).
    A patch with less than `min_visible` of its area inside the crop gets tag -1 (ignored); its
    box is clipped to the crop (or the whole crop when nothing is left)."""
    rows = np.asarray(rows, np.float64).reshape(-1, 5)
    sy, sx = scale
    y0, x0, y1, x1 = rows[:, 0] * sy, rows[:, 1] * sx, rows[:, 2] * sy, rows[:, 3] * sx
    if flipped_width is not None:
        x0, x1 = flipped_width - x1, flipped_width - x0
    y0, y1, x0, x1 = y0 + offset[0], y1 + offset[0], x0 + offset[1], x1 + offset[1]
    cy0, cx0, cy1, cx1 = (np.clip(v, 0, crop) for v in (y0, x0, y1, x1))
    area = np.maximum((y1 - y0) * (x1 - x0), 1e-9)
    visible = np.clip(cy1 - cy0, 0, None) * np.clip(cx1 - cx0, 0, None) / area
    tags = rows[:, 4].astype(np.int64)
    tags = np.where(visible >= min_visible, tags, UNCERTAIN)
    boxes = np.stack([cy0, cx0, cy1, cx1], axis=1)
    empty = (boxes[:, 2] - boxes[:, 0] < 1) | (boxes[:, 3] - boxes[:, 1] < 1)
    boxes[empty] = (0, 0, crop, crop)
    return boxes.astype(np.float32), tags


def roi_map(scores: np.ndarray, classes: Sequence[int], high: float, low: float) -> np.ndarray:
    """The ROI of CAM seeds (K planes of the present 1-based `classes`), as `pseudo.roi_mask` makes
    it from a training batch: class where the best score > high, -1 uncertain in (low, high], 0."""
    if scores.shape[0] == 0:
        return np.zeros(scores.shape[1:], np.int64)
    v = scores.max(0)
    cls = np.asarray(classes, np.int64)[scores.argmax(0)]
    return np.where(v > high, cls, np.where(v > low, UNCERTAIN, 0)).astype(np.int64)


def tag_image(roi: np.ndarray, num_patches: int, size: int, threshold: float, bg_rule: str,
              empty_global_tag: int = 1, generator: torch.Generator | None = None) -> tuple[int, np.ndarray]:
    """Offline tags of one image's ROI through `assign_tags`: (global tag, K x 5 int32 rows
    [y0, x0, y1, x1, tag] in image pixels). `generator` None is the official reseeding with 0."""
    positions, tags = assign_tags(torch.from_numpy(roi)[None], num_patches, size, threshold, bg_rule,
                                  empty_global_tag, generator)
    pos = positions[0].numpy()
    rows = np.concatenate([pos, pos + size, tags[0, 2:, None].numpy()], axis=1)
    return int(tags[0, 0]), rows.astype(np.int32)


def tag_correct(gt_patch: np.ndarray, tag: int, bg_max_fg: float = 0.2) -> bool | None:
    """Tag accuracy against ground truth; None for uncertain tags (not scored).

    Class tag: the patch's majority GT class (255 ignored, background included) equals it.
    Background tag: the GT foreground share of the patch is <= bg_max_fg.
    """
    valid = gt_patch[gt_patch != IGNORE_INDEX]
    if tag == UNCERTAIN or valid.size == 0:
        return None
    if tag == 0:
        return float(np.count_nonzero(valid)) / valid.size <= bg_max_fg
    return int(np.bincount(valid).argmax()) == tag
