"""CAM inference (IRN's make_cam), its cache form, and CAM -> seed label conversion (IRN's eval_cam)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from pipeline.data.transforms import normalize, to_chw
from pipeline.io.h5store import fit_scores

if TYPE_CHECKING:
    import torch


def strided_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """IRN's get_strided_size: cells of a stride-s grid over an H x W image, ceil(H/s) x ceil(W/s)."""
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def strided_up_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """IRN's get_strided_up_size: the pixel extent of that grid, s*ceil(H/s) x s*ceil(W/s)."""
    h, w = strided_size(size, stride)
    return h * stride, w * stride


def rescale_bicubic(image: np.ndarray, scale: float) -> np.ndarray:
    """IRN's `pil_rescale(img, scale, order=3)`: PIL bicubic on the uint8 image, to
    (round(H*scale), round(W*scale)) with NumPy's rounding (half to even); unchanged at its own size.

    One deviation: a side that would round to 0 pixels is kept at 1 (IRN fails there).
    """
    h, w = image.shape[:2]
    size = (max(1, int(np.round(h * scale))), max(1, int(np.round(w * scale))))
    if size == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC))


class IrnCams(NamedTuple):
    """IRN's make_cam outputs for the K present classes, each plane divided by its max (+1e-5)."""

    strided: np.ndarray   # K x ceil(H/stride) x ceil(W/stride): IRN's "cam" (the random walk's input)
    high_res: np.ndarray  # K x H x W: IRN's "high_res" (eval_cam, cam_to_ir_label)


def multiscale_cam(net, image: np.ndarray, classes: Sequence[int], scales: Sequence[float], *, stride: int,
                   output_stride: int, device: torch.device | str = "cpu") -> IrnCams:
    """IRN's make_cam for one uint8 H x W x 3 image and its present (1-based) `classes`.

    Per scale: PIL-bicubic rescale of the uint8 image, then ImageNet normalisation; the image and
    its flip go through `net.cam` (ReLU'd CAMs at the network's stride) as one batch and the flip's
    CAM is flipped back and added. `strided` sums every scale's CAM bilinearly resized to the
    stride-`stride` grid; `high_res` sums them bilinearly upsampled to the extent of the
    network's `output_stride` grid, output_stride*ceil(H/output_stride), then crops to H x W.
    Each of the two is divided per class by its own max + 1e-5 (no further ReLU: the CAMs are
    already non-negative).
    """
    # torch is imported here, not at module level: the CRF workers import this module for the
    # label functions below, and a torch import adds about a second to every worker pool's start.
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    strided_hw, up_hw = strided_size((h, w), stride), strided_up_size((h, w), output_stride)
    if not len(classes):
        return IrnCams(np.zeros((0, *strided_hw), np.float32), np.zeros((0, h, w), np.float32))
    idx = torch.as_tensor([c - 1 for c in classes], dtype=torch.long, device=device)
    strided = high_res = None
    with torch.no_grad():
        for s in scales:
            x = torch.from_numpy(to_chw(normalize(rescale_bicubic(image, s))))[None].to(device)
            pair = net.cam(torch.cat([x, x.flip(-1)])).float()
            # only the present classes are kept: every later step works per channel
            cam = (pair[0] + pair[1].flip(-1))[idx][None]
            st = F.interpolate(cam, size=strided_hw, mode="bilinear", align_corners=False)[0]
            hr = F.interpolate(cam, size=up_hw, mode="bilinear", align_corners=False)[0]
            strided = st if strided is None else strided + st
            high_res = hr if high_res is None else high_res + hr
        high_res = high_res[:, :h, :w]
        strided = strided / (strided.amax((1, 2), keepdim=True) + 1e-5)
        high_res = high_res / (high_res.amax((1, 2), keepdim=True) + 1e-5)
    return IrnCams(strided.cpu().numpy(), high_res.cpu().numpy())


def cam_cache(high_res: np.ndarray, stride: int) -> np.ndarray:
    """The stored form of `high_res` in a CAM cache (cams.h5) at `stride`: the cells whose
    bilinear upsampling on read reproduces it (`h5store.fit_scores`); the writer keeps them as
    float16. make_cam writes it and the benchmark measures it, so both use this one function."""
    return fit_scores(high_res, stride)


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
