"""SeCo inference (`tools/infer_cam.py`, `tools/infer_seg_voc.py`): CAM seeds and multi-scale
segmentation logits of one image, and the logits cache's least-squares fit and mantissa rounding."""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=256)
def _fit_matrix(n: int, stride: int) -> torch.Tensor:
    """g x n pseudo-inverse of the reader's 1-D upsampling (`upsample_scores`: linear,
    align_corners=False, from g = ceil(n/stride) cells to g*stride pixels, cropped to n)."""
    g = (n - 1) // stride + 1
    up = F.interpolate(torch.eye(g, dtype=torch.float64)[:, None], size=g * stride, mode="linear",
                       align_corners=False)[:, 0, :n]
    return torch.linalg.pinv(up.T)


def fit_cache(logits: torch.Tensor, stride: int) -> torch.Tensor:
    """C x ceil(H/s) x ceil(W/s) cell values whose bilinear upsampling (what a reader does) is the
    least-squares closest to the full-resolution C x H x W logits. Separable: Py L Px^T. Much
    closer after upsampling than area averages (measured in docs/ARTIFACTS.md)."""
    if stride == 1:
        return logits
    h, w = logits.shape[-2:]
    py = _fit_matrix(h, stride).to(logits.device, torch.float32)
    px = _fit_matrix(w, stride).to(logits.device, torch.float32)
    return py @ logits.float() @ px.T


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float16 with the mantissa rounded to `bits` of its 10 bits (round half up on the bit
    pattern; 10 = unchanged). Zeroed low bits make gzip+shuffle effective on logits."""
    half = values.astype(np.float16)
    if bits >= 10:
        return half
    drop = 10 - bits
    u = half.view(np.uint16).astype(np.uint32)
    finite = np.isfinite(half)
    rounded = (((u + (1 << (drop - 1))) >> drop) << drop).astype(np.uint16).view(np.float16)
    return np.where(finite & np.isfinite(rounded), rounded, half)
