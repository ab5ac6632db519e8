"""SeCo inference (`tools/infer_cam.py`, `tools/infer_seg_voc.py`): CAM seeds and multi-scale
segmentation logits of one image. The logits cache's least-squares fit and mantissa rounding are
the score store's (`pipeline.io.h5store.fit_scores`, `round_mantissa`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.irn.cams import strided_size
from pipeline.seco.pseudo import multi_scale_cams


def input_size(size: tuple[int, int], scale: float, infer: dict) -> tuple[int, int]:
    if infer["resize"] == "square":
        side = int(infer["square_size"] * scale)
        return side, side
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


@torch.no_grad()
def seg_logits(net, x: torch.Tensor, size: tuple[int, int], scales: list[float], infer: dict) -> torch.Tensor:
    """C x H x W float32: per scale logits(image) + flip(logits(flipped image)), upsampled to
    `size`; max over scales."""
    best = None
    for s in scales:
        xs = F.interpolate(x, size=input_size(size, s, infer), mode="bilinear", align_corners=False)
        out = net.seg_logits(torch.cat([xs, xs.flip(-1)])).float()
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        seg = out[0] + out[1].flip(-1)
        best = seg if best is None else torch.maximum(best, seg)
    return best


@torch.no_grad()
def cam_seeds(net, x: torch.Tensor, size: tuple[int, int], classes: list[int], infer: dict) -> np.ndarray:
    """K x ceil(H/s) x ceil(W/s) min-max normalised CAMs of the present (1-based) classes."""
    xs = F.interpolate(x, size=input_size(size, 1.0, infer), mode="bilinear", align_corners=False)
    cam, _ = multi_scale_cams(net, xs, infer["cam_scales"], out_size=strided_size(size, infer["cam_stride"]))
    return cam[0, [c - 1 for c in classes]].cpu().numpy()
