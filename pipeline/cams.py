"""CAM inference (IRN's make_cam) and CAM -> seed label conversion (IRN's eval_cam)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.transforms import normalize, to_chw


def strided_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


@torch.no_grad()
def multiscale_cam(net, image: np.ndarray, classes: Sequence[int], scales: Sequence[float],
                   stride: int = 4, device: torch.device | str = "cpu") -> np.ndarray:
    """IRN's make_cam for one image: K x ceil(H/stride) x ceil(W/stride), one plane per class.

    For each scale the image and its flip are run together and summed; every scale's CAM is
    resized to the stride grid and summed; planes of the present `classes` (1-based) are kept
    and each is divided by its maximum (+1e-5).
    """
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
