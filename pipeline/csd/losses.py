"""CSD's pixel-wise consistency losses on CAMs (PSD_WSSS `engine.train_one_epoch`, `func.cal_cam`,
`func.Pixel_Purity`), for IRN's CNN CAMs: every map is B x C x h x w at the CAM stride.

    L_fg = sum_b sum_cells w_fg * KL_c( softmax(cmm(A_S) * tau) || softmax(cmm(A_fg)) ) / B
           on cells fully inside the pasted object where the source is confident (smm > 0.5);
    L_bg = sum_b sum_cells w_bg * KL_bg( softmax([A_S, 0.1]) || softmax(10 * [A_bg, 0.1]) ) / B
           on cells fully inside the pasted background (A: raw or image-max-normalised CAMs);
KL_c keeps only the term of channel c (the pasted class; the background channel for L_bg).
The source maps A_S come from the same network, without gradient, in eval mode. w are purity
weights: a spatial softmax of each pasted image's normalised class entropy over its pasted cells.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-4  # PSD_WSSS's min-max epsilon (raised from 1e-8 there for mixed precision)


def class_minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max across classes at each position ("cmm")."""
    lo, hi = maps.amin(1, keepdim=True), maps.amax(1, keepdim=True)
    return (maps - lo) / (hi - lo + EPS)


def spatial_minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max over space for each class ("smm")."""
    flat = maps.flatten(2)
    lo, hi = flat.amin(2, keepdim=True), flat.amax(2, keepdim=True)
    return ((flat - lo) / (hi - lo + EPS)).view_as(maps)


def region_cells(region: torch.Tensor, cam_size: tuple[int, int], fraction: float = 1.0) -> torch.Tensor:
    """B x H x W bool pixels -> B x h x w bool cells whose share of region pixels is >= fraction
    (PSD_WSSS: avg-pool per 16x16 patch >= 1, i.e. cells lying fully inside the region)."""
    h, w = cam_size
    kh, kw = region.shape[-2] // h, region.shape[-1] // w
    if kh * h != region.shape[-2] or kw * w != region.shape[-1]:
        raise ValueError(f"region {tuple(region.shape[-2:])} is not a multiple of the CAM grid {cam_size}")
    share = F.avg_pool2d(region[:, None].float(), (kh, kw))[:, 0]
    return share >= fraction


def fg_consistency(source_cam: torch.Tensor, pasted_cam: torch.Tensor, paste_class: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """B x h x w: the pasted-class term of KL(softmax(cmm_S * tau) || softmax(cmm_pasted))."""
    p = F.softmax(class_minmax(source_cam) * temperature, dim=1)
    log_q = F.log_softmax(class_minmax(pasted_cam), dim=1)
    kl = F.kl_div(log_q, p, reduction="none")
    return kl.gather(1, paste_class.view(-1, 1, 1, 1).expand(-1, 1, *kl.shape[2:]))[:, 0]


def _with_background(maps: torch.Tensor, score: float) -> torch.Tensor:
    return torch.cat([maps, torch.full_like(maps[:, :1], score)], dim=1)


def image_max_normalized(maps: torch.Tensor) -> torch.Tensor:
    """Maps divided by each image's (detached) maximum over classes and space, when that exceeds
    1: a rescaling into [0, 1] that keeps the classes' relative strengths and gives the loss no
    gradient to scale. Maps whose maximum is below 1 are left as they are: dividing a near-zero
    map by its maximum would multiply its gradient by up to 1/max (a training run diverged so)."""
    return maps / maps.detach().flatten(1).amax(1).clamp_min(1.0).view(-1, 1, 1, 1)


BG_MAPS = ("raw", "max_normalized")


def bg_consistency(source_cam: torch.Tensor, pasted_cam: torch.Tensor, bg_score: float = 0.1,
                   sharpen: float = 10.0, maps: str = "raw") -> torch.Tensor:
    """B x h x w: the background term of KL(softmax([A_S, s]) || softmax(k * [A_pasted, s])) with a
    constant background channel s (PSD_WSSS: s = 0.1, k = 10, on its raw attention-refined maps).

    `maps`: `raw` CAMs as they are, or `max_normalized` (each image's CAMs divided by their
    maximum), the scale PSD_WSSS's maps and constant live on (see docs/CSD.md).
    """
    if maps == "max_normalized":
        source_cam, pasted_cam = image_max_normalized(source_cam), image_max_normalized(pasted_cam)
    elif maps != "raw":
        raise ValueError(f"unknown BG map scale {maps!r}")
    p = F.softmax(_with_background(source_cam, bg_score), dim=1)
    log_q = F.log_softmax(_with_background(pasted_cam, bg_score) * sharpen, dim=1)
    return F.kl_div(log_q, p, reduction="none")[:, -1]


def source_confidence(source_cam: torch.Tensor, paste_class: torch.Tensor) -> torch.Tensor:
    """B x h x w: the source's spatially min-max normalised map of its (single) class."""
    smm = spatial_minmax(source_cam)
    return smm.gather(1, paste_class.view(-1, 1, 1, 1).expand(-1, 1, *smm.shape[2:]))[:, 0]


def purity_weights(pasted_cam: torch.Tensor, labels: torch.Tensor, region: torch.Tensor, *, bg_score: float = 0.4,
                   temperature: float = 1.0, kernel: int = 1, empty: str = "uniform") -> torch.Tensor:
    """B x h x w weights, each image's summing to 1 over its `region` cells.

    smm of the pasted image's maps, kept for its labelled classes, plus a constant background
    channel, normalised per position; the class entropy (over a kernel x kernel window, 1 in
    PSD_WSSS) divided by log(C + 1) is the "purity"; weights = spatial softmax(purity * t) over
    the region, so ambiguous positions weigh more. An image without region cells gets uniform
    weights over all cells (`uniform`, what PSD_WSSS's -10000 fill gives) or none (`zero`).
    """
    with torch.no_grad():
        maps = spatial_minmax(pasted_cam) * labels[:, :, None, None]
        dist = _with_background(maps, bg_score)
        dist = dist / dist.sum(1, keepdim=True)
        if kernel > 1:
            c = dist.shape[1]
            ones = torch.ones(c, 1, kernel, kernel, dtype=dist.dtype, device=dist.device)
            dist = F.conv2d(dist, ones, padding=kernel // 2, groups=c)
            dist = dist / dist.sum(1, keepdim=True)
        entropy = -(dist * torch.log(dist + 1e-6)).sum(1) / math.log(dist.shape[1])
        logits = (entropy * temperature).masked_fill(~region, float("-inf")).flatten(1)
        has = region.flatten(1).any(1)
        weights = torch.zeros_like(logits)
        weights[has] = F.softmax(logits[has], dim=1)
        if empty == "uniform":
            weights[~has] = 1.0 / logits.shape[1]
        elif empty != "zero":
            raise ValueError(f"unknown empty-region rule {empty!r}")
        return weights.view_as(entropy)


def csd_losses(source_cam: torch.Tensor, fg_cam: torch.Tensor, bg_cam: torch.Tensor, batch: dict,
               cfg: dict) -> dict[str, torch.Tensor]:
    """L_fg, L_bg (scalars) and the fraction of cells each used, for one batch of paste pairs.

    `batch` holds paste_class (B, 0-based), fg_label / bg_label (B x C), fg_region / bg_region
    (B x H x W bool, crop pixels); `cfg` is the `csd` config section.
    """
    size = tuple(fg_cam.shape[-2:])
    cls = batch["paste_class"]
    fg_cells = region_cells(batch["fg_region"], size, cfg["region_fraction"])
    bg_cells = region_cells(batch["bg_region"], size, cfg["region_fraction"])
    confident = source_confidence(source_cam, cls) > cfg["fg_confidence"]
    fg_term = fg_consistency(source_cam, fg_cam, cls, cfg["fg_temperature"]) * (fg_cells & confident)
    # Like PSD_WSSS, the BG term is not masked: its weights are 0 outside the region.
    bg_term = bg_consistency(source_cam, bg_cam, cfg["bg_score"], cfg["bg_sharpen"], cfg["bg_maps"])
    purity = {"bg_score": cfg["purity_bg_score"], "temperature": cfg["purity_temperature"],
              "kernel": cfg["purity_kernel"], "empty": cfg["empty_region_weights"]}
    w_fg = purity_weights(fg_cam, batch["fg_label"], fg_cells, **purity)
    w_bg = purity_weights(bg_cam, batch["bg_label"], bg_cells, **purity)
    n = fg_cam.shape[0]
    return {
        "fg": (fg_term * w_fg).sum() / n,
        "bg": (bg_term * w_bg).sum() / n,
        "fg_cells": (fg_cells & confident).float().mean().detach(),
        "bg_cells": bg_cells.float().mean().detach(),
    }
