"""PAR: pixel-adaptive refinement of CAM probabilities (AFA/ToCo/SeCo `model/PAR.py`).

For every pixel, 8 neighbours at each dilation (48 for SeCo's [1, 2, 4, 8, 12, 24], replicate
padding). The affinity to a neighbour is

    softmax_n( -mean_rgb( |I_n - I| / (std_n(I_n) + 1e-8) / 0.3 )^2 )
      + 0.01 * softmax_n( -( d_n / std_n(d_n) / 0.3 )^2 )

where std_n is the (unbiased) standard deviation over the neighbours and d_n the neighbour's
distance (d or d*sqrt(2)). The masks are then propagated `num_iter` times as the
affinity-weighted sum over the neighbours. Images are expected in [0, 1] (SeCo's
`denormalize_img2`), masks are per-pixel class probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

RGB_TEMPERATURE = 0.3  # w1 in the official code (applies to the position term as well)
POS_WEIGHT = 0.01  # w2


# The 8 neighbours of a 3x3 window, row-major; corners (indices 0, 2, 5, 7) are sqrt(2) away.
OFFSETS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))


class PAR(nn.Module):
    def __init__(self, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24), num_iter: int = 10) -> None:
        super().__init__()
        self.dilations = [int(d) for d in dilations]
        self.num_iter = int(num_iter)
        dist = torch.ones(8)
        dist[[0, 2, 5, 7]] = math.sqrt(2.0)
        pos = torch.cat([dist * d for d in self.dilations])  # 8 * len(dilations)
        self.register_buffer("pos", pos.view(1, 1, -1, 1, 1), persistent=False)

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x C x (8 * len(dilations)) x H x W neighbour values (replicate
        padding): the official dilated one-hot convolutions, as shifted slices."""
        h, w = x.shape[-2:]
        out = []
        for d in self.dilations:
            padded = F.pad(x, [d] * 4, mode="replicate")
            out.extend(padded[..., i * d : i * d + h, j * d : j * d + w] for i, j in OFFSETS)
        return torch.stack(out, dim=2)

    def affinity(self, images: torch.Tensor) -> torch.Tensor:
        """B x 1 x N x H x W propagation weights (they sum to 1 + POS_WEIGHT over the N neighbours)."""
        b, _, h, w = images.shape
        nb = self.neighbours(images)
        diff = (nb - images.unsqueeze(2)).abs()
        std = nb.std(dim=2, keepdim=True)
        rgb = -((diff / (std + 1e-8) / RGB_TEMPERATURE) ** 2)
        rgb = rgb.mean(dim=1, keepdim=True)
        pos = self.pos.to(images.dtype).expand(b, 1, -1, h, w)
        pos_std = pos.std(dim=2, keepdim=True)
        pos_aff = -((pos / (pos_std + 1e-8) / RGB_TEMPERATURE) ** 2)
        return F.softmax(rgb, dim=2) + POS_WEIGHT * F.softmax(pos_aff, dim=2)

    def propagate(self, masks: torch.Tensor, aff: torch.Tensor) -> torch.Tensor:
        """One step: sum over neighbours of affinity x neighbour value, without materialising the
        B x K x N x H x W neighbour stack."""
        h, w = masks.shape[-2:]
        out = torch.zeros_like(masks)
        n = 0
        for d in self.dilations:
            padded = F.pad(masks, [d] * 4, mode="replicate")
            for i, j in OFFSETS:
                out += aff[:, :, n] * padded[..., i * d : i * d + h, j * d : j * d + w]
                n += 1
        return out

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Refine `masks` (B x K x h x w, resized to the image size first) guided by `images`."""
        masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=True)
        aff = self.affinity(images)
        for _ in range(self.num_iter):
            masks = self.propagate(masks, aff)
        return masks
