"""CAM inference (IRN's make_cam) and CAM -> seed label conversion (IRN's eval_cam)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline.data.transforms import normalize, to_chw

if TYPE_CHECKING:
    import torch


def strided_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def multiscale_cam(net, image: np.ndarray, classes: Sequence[int], scales: Sequence[float],
                   stride: int = 4, device: torch.device | str = "cpu") -> np.ndarray:
    """IRN's make_cam for one image: K x ceil(H/stride) x ceil(W/stride), one plane per class.

    For each scale the image and its flip are run together and summed; every scale's CAM is
    resized to the stride grid and summed; planes of the present `classes` (1-based) are kept
    and each is divided by its maximum (+1e-5).
    """
    # torch is imported here, not at module level: the CRF workers import this module for the
    # label functions below, and a torch import adds about a second to every worker pool's start.
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        h, w = image.shape[:2]
        out_size = strided_size((h, w), stride)
        x = torch.from_numpy(to_chw(normalize(image)))[None].to(device)
        acc = None
        for s in scales:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            cams = net.cam(torch.cat([xs, xs.flip(-1)]))
            cam = cams[0] + cams[1].flip(-1)
            cam = F.interpolate(cam[None].float(), size=out_size, mode="bilinear", align_corners=False)[0]
            acc = cam if acc is None else acc + cam
        idx = torch.as_tensor([c - 1 for c in classes], dtype=torch.long, device=acc.device)
        keep = acc[idx]
        keep = keep / (keep.flatten(1).amax(1)[:, None, None] + 1e-5)
        return keep.cpu().numpy()


def scores_to_label(scores: np.ndarray, classes: Sequence[int], bg_threshold: float) -> np.ndarray:
    """Prepend a constant background plane, argmax, map plane index -> class id (IRN)."""
    if len(classes) == 0:
        return np.zeros(scores.shape[1:], np.uint8)
    stacked = np.concatenate([np.full((1, *scores.shape[1:]), bg_threshold, scores.dtype), scores])
    keys = np.asarray([0, *classes], np.uint8)
    return keys[stacked.argmax(0)]


def dual_threshold_labels(scores: np.ndarray, classes: Sequence[int], fg_threshold: float,
                          bg_threshold: float) -> np.ndarray:
    """IRN's cam_to_ir_label thresholds without the CRF: uint8 HxW, 255 = uncertain.

    Foreground = argmax class where the best CAM score exceeds `fg_threshold` (IRN's
    conf_fg_thres 0.30); background (0) where it is at most `bg_threshold` (conf_bg_thres 0.05);
    everything in between is uncertain. `scores` are K max-normalised planes (K x H x W) of the
    1-based `classes`; an image without classes is all background.
    """
    if not 0.0 <= bg_threshold <= fg_threshold:
        raise ValueError(f"need 0 <= bg_threshold ({bg_threshold}) <= fg_threshold ({fg_threshold})")
    if len(classes) != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} score planes for {len(classes)} classes")
    if len(classes) == 0:
        return np.zeros(scores.shape[1:], np.uint8)
    fg = scores_to_label(scores, classes, fg_threshold)
    best = scores.max(0)
    # ties at exactly fg_threshold go to background in IRN's argmax (bg plane first); keep that
    labels = np.where(best > bg_threshold, np.uint8(255), np.uint8(0)).astype(np.uint8)
    return np.where(fg > 0, fg, labels).astype(np.uint8)
