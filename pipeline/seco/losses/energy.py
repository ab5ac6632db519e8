"""L_reg: the dense-CRF energy regulariser of rloss (SeCo `DenseEnergyLoss`), in PyTorch.

The official loss (weight 1e-7, sigma_rgb 15, sigma_xy 100, scale 0.5) calls a compiled
permutohedral-lattice bilateral filter. Here the bilateral filter is an exact dense Gaussian,

    (W S)_i = sum_j exp(-|p_i - p_j|^2 / (2 sigma_xy^2) - |I_i - I_j|^2 / (2 sigma_rgb^2)) S_j

(self term included, as the lattice does), computed in row chunks so memory stays bounded. Above
`max_side` pixels (on the 0.5-scaled map) image, probabilities and masks are further area-
downsampled to at most max_side on the long side, sigma_xy is scaled with them and the energy is
multiplied by (pixels ratio)^2 (each coarse pixel stands for that many pixels on each end of a
pair), so the loss keeps the official magnitude. That is the documented approximation for large
crops (VOC's 448 crop: 224^2 pixels -> max_side^2); small crops are exact.

Energy and gradient follow rloss literally:
    gate = ROI - max_k S_k, set to 1 on unlabelled pixels (pseudo label 255), clamped at 0
    AS   = (W (S * ROI)) * gate
    E    = -sum(S * ROI * AS) / N,      dE/dS = -2 AS * ROI / N   (gate treated as a constant)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.data.labels import IGNORE_INDEX

CHUNK = 1024


def pixel_features(images: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    """B x (H*W) x 5 features (x/sigma_xy, y/sigma_xy, rgb/sigma_rgb) of B x 3 x H x W images."""
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=images.dtype),
                            torch.arange(w, device=images.device, dtype=images.dtype), indexing="ij")
    pos = torch.stack([xs, ys]).reshape(1, 2, -1).expand(b, -1, -1) / sigma_xy
    rgb = images.reshape(b, 3, -1) / sigma_rgb
    return torch.cat([pos, rgb], dim=1).transpose(1, 2)


def dense_gaussian_filter(images: torch.Tensor, values: torch.Tensor, sigma_rgb: float,
                          sigma_xy: float) -> torch.Tensor:
    """Exact bilateral filtering (unnormalised, self term included) of `values` (B x K x H x W).

    The exponent -|f_i - f_j|^2 / 2 comes out of one matmul of augmented features,
    [f_i, |f_i|^2, 1] . [f_j, -1/2, -|f_j|^2 / 2] scaled, then clamp and exp in place: four passes
    over each P x P chunk instead of a dozen (this loss is memory bound)."""
    b, k, h, w = values.shape
    feats = pixel_features(images.float(), sigma_rgb, sigma_xy)
    feats = feats - feats.mean(dim=1, keepdim=True)  # smaller norms, less cancellation
    sq = (feats**2).sum(-1, keepdim=True)
    ones = torch.ones_like(sq)
    left = torch.cat([feats, sq, ones], dim=-1)  # B x P x 7
    right = torch.cat([feats, -0.5 * ones, -0.5 * sq], dim=-1)
    vals = values.float().reshape(b, k, -1).transpose(1, 2)  # B x P x K
    out = torch.empty_like(vals)
    for start in range(0, feats.shape[1], CHUNK):
        expo = left[:, start : start + CHUNK] @ right.transpose(1, 2)  # -|f_i - f_j|^2 / 2
        out[:, start : start + CHUNK] = expo.clamp_max_(0.0).exp_() @ vals
    return out.transpose(1, 2).reshape(b, k, h, w)


class _DenseEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images, probs, roi, unlabeled, sigma_rgb, sigma_xy):  # noqa: D102 - autograd API
        n = probs.shape[0]
        with torch.no_grad(), torch.autocast(probs.device.type, enabled=False):
            probs32, roi32 = probs.float(), roi.float()
            gate = (roi32 - probs32.max(dim=1).values).masked_fill(unlabeled, 1.0).clamp_min(0.0)
            seg = probs32 * roi32[:, None]
            as_ = dense_gaussian_filter(images, seg, sigma_rgb, sigma_xy) * gate[:, None]
            energy = -(seg * as_).sum() / n
        ctx.save_for_backward(as_ * roi32[:, None])
        ctx.n = n
        ctx.dtype = probs.dtype
        return energy

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 - autograd API
        (as_roi,) = ctx.saved_tensors
        return None, (-2.0 * grad * as_roi / ctx.n).to(ctx.dtype), None, None, None, None


def dense_energy(images: torch.Tensor, probs: torch.Tensor, roi: torch.Tensor, unlabeled: torch.Tensor,
                 sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    """rloss's DenseEnergyLossFunction (without weight/rescaling), exact dense kernel."""
    return _DenseEnergy.apply(images, probs, roi, unlabeled, sigma_rgb, sigma_xy)


class DenseEnergyLoss(nn.Module):
    def __init__(self, weight: float = 1e-7, sigma_rgb: float = 15.0, sigma_xy: float = 100.0,
                 scale_factor: float = 0.5, max_side: int | None = 64) -> None:
        super().__init__()
        self.weight, self.sigma_rgb, self.sigma_xy = weight, sigma_rgb, sigma_xy
        self.scale_factor, self.max_side = scale_factor, max_side

    def forward(self, images: torch.Tensor, probs: torch.Tensor, roi: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        """`images` B x 3 x H x W in 0..255, `probs` softmax B x K x H x W, `roi` B x H x W valid
        (non-padding) region, `labels` B x H x W pseudo labels (255 unlabelled)."""
        s = self.scale_factor
        img = F.interpolate(images.float(), scale_factor=s, recompute_scale_factor=True)
        seg = F.interpolate(probs, scale_factor=s, mode="bilinear", align_corners=False, recompute_scale_factor=True)
        rois = F.interpolate(roi[:, None].float(), scale_factor=s, recompute_scale_factor=True)[:, 0]
        lab = F.interpolate(labels[:, None].float(), scale_factor=s, recompute_scale_factor=True)[:, 0]
        unlabeled = lab == IGNORE_INDEX
        sigma_xy = self.sigma_xy * s
        h, w = seg.shape[-2:]
        pair_scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            r = self.max_side / max(h, w)
            size = (max(1, round(h * r)), max(1, round(w * r)))
            img = F.interpolate(img, size=size, mode="area")
            seg = F.interpolate(seg, size=size, mode="area")
            rois = F.interpolate(rois[:, None], size=size, mode="area")[:, 0]
            unlabeled = F.interpolate(unlabeled[:, None].float(), size=size, mode="area")[:, 0] > 0.5
            ratio = (h * w) / (size[0] * size[1])
            sigma_xy = sigma_xy * (ratio**-0.5)
            pair_scale = ratio**2
        return self.weight * pair_scale * dense_energy(img, seg, rois, unlabeled, self.sigma_rgb, sigma_xy)
