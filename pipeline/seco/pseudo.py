"""CAMs and online pseudo labels of SeCo/ToCo (`utils/camutils.py`).

    multi_scale_cams      multi_scale_cam2: per scale the image and its flip, max of the two,
                          ReLU, sum over scales, per-(image, class) min-max normalisation
    cam_to_label          class where the label-masked CAM > high, ignore in (low, high], 0 <= low
    roi_mask              the same with -1 for the uncertain band (the "separate" ROI)
    refine_with_background  refine_cams_with_bkg_v2: PAR on softmax(bkg 0.7 | CAMs) and
                          softmax(bkg 0.25 | CAMs) at half resolution, then the dual-threshold merge
Image boxes are (y0, x0, y1, x1) of the valid (non-padding) region of a training crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@torch.no_grad()
def multi_scale_cams(net, inputs: torch.Tensor, scales: Sequence[float],
                     out_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(CAM, aux CAM), each B x (C-1) x H x W in [0, 1] (H x W = `out_size`, default the input's).

    Scale s resizes the input to (int(s*h), int(s*w)); bilinear resizing keeps each map's extrema,
    so normalising at `out_size` equals the official normalisation at the input size.
    """
    b, _, h, w = inputs.shape
    size = out_size or (h, w)
    total, total_aux = None, None
    for s in scales:
        x = inputs if s == 1.0 else F.interpolate(inputs, size=(int(s * h), int(s * w)), mode="bilinear",
                                                  align_corners=False)
        aux, cam = net.cams(torch.cat([x, x.flip(-1)]))
        maps = []
        for m in (cam, aux):
            m = F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)
            maps.append(F.relu(torch.max(m[:b], m[b:].flip(-1))))
        total = maps[0] if total is None else total + maps[0]
        total_aux = maps[1] if total_aux is None else total_aux + maps[1]
    return _minmax(total), _minmax(total_aux)


def _minmax(cam: torch.Tensor) -> torch.Tensor:
    cam = cam - cam.amin(dim=(2, 3), keepdim=True)
    return cam / (cam.amax(dim=(2, 3), keepdim=True) + 1e-5)


def _outside_box(label: torch.Tensor, boxes: torch.Tensor | Sequence, fill: int) -> torch.Tensor:
    out = torch.full_like(label, fill)
    for i, (y0, x0, y1, x1) in enumerate(np.asarray(boxes.cpu() if torch.is_tensor(boxes) else boxes).tolist()):
        out[i, y0:y1, x0:x1] = label[i, y0:y1, x0:x1]
    return out


def _threshold(cam: torch.Tensor, cls_label: torch.Tensor, high: float, low: float,
               mid: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = cam * cls_label[:, :, None, None].to(cam.dtype)
    value, idx = valid.max(dim=1)
    label = idx + 1
    label[value <= high] = mid
    label[value <= low] = 0
    return valid, label


def cam_to_label(cam: torch.Tensor, cls_label: torch.Tensor, high: float, low: float,
                 boxes: torch.Tensor | Sequence | None = None,
                 ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """(label-masked CAM, label map B x H x W: class / ignore / 0, ignore outside `boxes`)."""
    valid, label = _threshold(cam, cls_label, high, low, ignore_index)
    return valid, (label if boxes is None else _outside_box(label, boxes, ignore_index))


def roi_mask(cam: torch.Tensor, cls_label: torch.Tensor, high: float, low: float,
             boxes: torch.Tensor | Sequence | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """B x H x W: class where confident, -1 uncertain, 0 background, `ignore_index` outside boxes."""
    _, label = _threshold(cam, cls_label, high, low, -1)
    return label if boxes is None else _outside_box(label, boxes, ignore_index)


# The official `imutils.denormalize_img`'s constants: ImageNet's mean and std on the 0..255 scale.
_MEAN255 = (123.675, 116.28, 103.53)
_STD255 = (58.395, 57.12, 57.375)


def denormalize01(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> [0, 1] exactly as the official `denormalize_img2`: per channel
    x * std + mean with its literal constants, truncated to uint8, divided by 255. (The same
    arithmetic with IMAGENET_STD * 255 lands one uint8 level lower on ~1.5 % of values.)"""
    out = torch.zeros_like(x, dtype=torch.float32)
    for c in range(3):
        out[:, c] = x[:, c].float() * _STD255[c] + _MEAN255[c]
    return out.type(torch.uint8) / 255.0


def denormalize255(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> float 0..255 (no rounding; the energy loss's input)."""
    mean = torch.as_tensor(IMAGENET_MEAN, device=x.device)[None, :, None, None] * 255
    std = torch.as_tensor(IMAGENET_STD, device=x.device)[None, :, None, None] * 255
    return x.float() * std + mean


@torch.no_grad()
def refine_with_background(par, images01: torch.Tensor, valid_cam: torch.Tensor, cls_label: torch.Tensor,
                           high: float, low: float, boxes: torch.Tensor | Sequence,
                           ignore_index: int = IGNORE_INDEX, down_scale: int = 2) -> torch.Tensor:
    """Online segmentation pseudo labels (B x H x W long): the high-background stack's PAR label;
    its background becomes ignore, except where the low-background stack is background too.

    The official code runs PAR per image and per stack on the image's present channels. PAR
    propagates each channel independently with an image-dependent affinity, so one batched call
    on [high stack | low stack], each packed into the batch's largest present-class count with
    zero-probability padding slots, gives the same labels.
    """
    b, _, h, w = images01.shape
    small = (h // down_scale, w // down_scale)
    imgs = F.interpolate(images01.float(), size=small, mode="bilinear", align_corners=False)
    present = torch.cat([torch.ones(b, 1, device=cls_label.device), cls_label.float()], dim=1) > 0
    kmax = int(present.sum(dim=1).max())
    slots = torch.zeros(b, kmax, dtype=torch.long, device=present.device)
    used = torch.zeros(b, kmax, dtype=torch.bool, device=present.device)
    for i in range(b):
        keys = torch.nonzero(present[i])[:, 0]
        slots[i, : len(keys)] = keys
        used[i, : len(keys)] = True
    probs = []
    for bkg in (high, low):
        stack = torch.cat([torch.full((b, 1, h, w), bkg, device=valid_cam.device), valid_cam.float()], dim=1)
        stack = F.interpolate(stack, size=small, mode="bilinear", align_corners=False)
        packed = stack.gather(1, slots[:, :, None, None].expand(-1, -1, *small))
        probs.append(packed.masked_fill(~used[:, :, None, None], float("-inf")).softmax(dim=1))
    refined = F.interpolate(par(imgs, torch.cat(probs, dim=1)), size=(h, w), mode="bilinear", align_corners=False)
    labels = []
    for part in refined.split(kmax, dim=1):
        label = slots.gather(1, part.argmax(dim=1).flatten(1)).view(b, h, w)
        labels.append(_outside_box(label, boxes, ignore_index))
    label_h, label_l = labels
    label = label_h.clone()
    label[label_h == 0] = ignore_index
    label[(label_h + label_l) == 0] = 0
    return label
