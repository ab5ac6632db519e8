"""MCTformer-V2's class-specific localisation maps (engine.py `generate_attention_maps_ms` with
`--attention-type fused --patch-attn-refine`, as run.sh / run_coco.sh generate them).

Per forward pass, with A_l the head-averaged attention of block l (T x T, the C class tokens first):
  class-to-patch map  M = sum over the last `layers` blocks of A_l[class c, patch j]
  fused               F = M * ReLU(PatchCAM)                               (C x h x w)
  refined             R_c = P @ vec(F_c),  P = sum over all blocks of A_l[patch, patch]
Per image: every scale and its horizontal flip, each map bilinearly upsampled to the image size,
kept for the present classes only, the flip's map flipped back, all summed; then each class plane
is min-max normalised to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.transforms import normalize, to_chw
from pipeline.mctformer.model import MCTformerV2
from pipeline.runtime.device import autocast


def class_patch_attention(attn: torch.Tensor, num_classes: int, layers: int, grid: tuple[int, int]) -> torch.Tensor:
    """B x C x h x w: class-to-patch attention summed over the last `layers` blocks (the official
    V2 sums them; `layers` is its `--layer-index`). `attn`: L x B x T x T, head-averaged."""
    b = attn.shape[1]
    return attn[-layers:].sum(0)[:, :num_classes, num_classes:].reshape(b, num_classes, *grid)


def fuse(class_attn: torch.Tensor, patch_cam: torch.Tensor) -> torch.Tensor:
    """The "fused" map: class-to-patch attention times the ReLU'd PatchCAM, elementwise."""
    return class_attn * F.relu(patch_cam)


def patch_affinity(attn: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B x N x N patch-to-patch attention summed over every block (`torch.sum(patch_attn, 0)`)."""
    return attn[:, :, num_classes:, num_classes:].sum(0)


def refine(maps: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """B x C x h x w maps propagated by the B x N x N affinity: R[c, i] = sum_j P[i, j] F[c, j]."""
    b, c, h, w = maps.shape
    return (affinity[:, None] @ maps.reshape(b, c, h * w, 1)).reshape(b, c, h, w)


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each plane (last two dims) to (x - min) / (max - min + eps), as the official per class."""
    lo = maps.amin((-2, -1), keepdim=True)
    hi = maps.amax((-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + eps)


def refined_maps(net: MCTformerV2, x: torch.Tensor, layers: int, patch_refine: bool = True) -> torch.Tensor:
    """B x C x h x w fused maps of a normalised image batch, refined by the patch affinity when
    `patch_refine` (the official `--patch-attn-refine`, on in both official scripts)."""
    out = net(x, with_attn=True)
    grid = tuple(out.patch_cam.shape[-2:])
    fused = fuse(class_patch_attention(out.attn, net.num_classes, layers, grid), out.patch_cam.detach())
    return refine(fused, patch_affinity(out.attn, net.num_classes)) if patch_refine else fused


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """PIL bicubic to (round(W s), round(H s)), as the official VOC12DatasetMS (unchanged at 1.0)."""
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def multiscale_maps(net: MCTformerV2, image: np.ndarray, classes: Sequence[int], scales: Sequence[float], *,
                    layers: int, patch_refine: bool = True, device: torch.device | str = "cpu",
                    amp: str = "off") -> np.ndarray:
    """K x H x W min-max normalised maps of a uint8 H x W x 3 image for its K present (1-based)
    `classes`: every scale with its flip, upsampled to H x W and summed (see the module doc)."""
    h, w = image.shape[:2]
    if not len(classes):
        return np.zeros((0, h, w), np.float32)
    idx = torch.as_tensor([c - 1 for c in classes], dtype=torch.long, device=device)
    total = None
    dev = torch.device(device)
    with torch.no_grad():
        for s in scales:
            x = torch.from_numpy(to_chw(normalize(_rescale(image, s))))[None].to(dev)
            with autocast(dev, amp):
                maps = refined_maps(net, torch.cat([x, x.flip(-1)]), layers, patch_refine)
            maps = F.interpolate(maps.float()[:, idx], size=(h, w), mode="bilinear", align_corners=False)
            pair = maps[0] + maps[1].flip(-1)
            total = pair if total is None else total + pair
        return minmax_normalize(total).cpu().numpy()
