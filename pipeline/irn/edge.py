"""IRN's inter-pixel relation network (net/resnet50_irn.py `Net`, `EdgeDisplacement`) on a frozen
timm ResNet.

Two 1x1-conv branches read the five backbone stages (stem, layer1..layer4), whose features are
computed without gradient and with BatchNorm in eval mode:
  * boundary: each stage -> 32 channels (GroupNorm, upsampled to the stride-4 grid), concatenated,
    one 1x1 conv to a boundary logit;
  * displacement: stages -> 64/128/256/256/256 channels, the deep ones fused at stride 8 and
    upsampled, then fused with the shallow ones at stride 4 into a 2-channel (dy, dx) field.
Branch widths are IRN's whatever the backbone; the input widths and upsampling factors follow
the backbone's channels and reductions (IRN: ResNet-50 at output stride 16).

The backbone is IRN's frozen ImageNet ResNet-50 (`irn.backbone_from: pretrained`), or the
method's own trained CAM classifier's backbone (`cam_model`, the synthetic default: no
pretrained weights exist there). See docs/DEVIATIONS.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.backbones import create_backbone
from pipeline.data.transforms import normalize, to_chw
from pipeline.errors import PipelineError

EDGE_WIDTH = 32
DP_WIDTHS = (64, 128, 256, 256, 256)
GRID_STRIDE = 4  # both outputs live on the stride-4 grid of IRN's CAMs


def _block(cin: int, cout: int, groups: int, up: float = 1.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=False), nn.GroupNorm(groups, cout)]
    if up > 1:
        layers.append(nn.Upsample(scale_factor=up, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class EdgeDisplacementNet(nn.Module):
    def __init__(self, backbone: nn.Module, displacement: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        info = backbone.feature_info
        channels = [backbone.bn1.num_features, *info.channels()]
        reductions = [GRID_STRIDE, *info.reduction()]
        if len(channels) != 5 or reductions[1] != GRID_STRIDE:
            raise PipelineError(f"IRN needs a ResNet with four stages after a stride-4 stem, got reductions {reductions}")
        self.max_stride = max(reductions)
        self.edge_layers = nn.ModuleList([_block(c, EDGE_WIDTH, 4, r / GRID_STRIDE)
                                          for c, r in zip(channels, reductions, strict=True)])
        self.edge_out = nn.Conv2d(EDGE_WIDTH * 5, 1, 1, bias=True)
        self.displacement = displacement
        if displacement:
            # stages 1-2 at stride 4, stage 3 at stride 8, stages 4-5 upsampled to stride 8
            ups = [1.0, 1.0, 1.0, *(r / (2 * GRID_STRIDE) for r in reductions[3:])]
            self.dp_layers = nn.ModuleList([_block(c, w, 8 if w == 64 else 16, u)
                                            for c, w, u in zip(channels, DP_WIDTHS, ups, strict=True)])
            self.dp_fuse_deep = _block(sum(DP_WIDTHS[2:]), 256, 16, 2.0)
            self.dp_out = nn.Sequential(_block(sum(DP_WIDTHS[:2]) + 256, 256, 16),
                                        nn.Conv2d(256, 2, 1, bias=False))

    def train(self, mode: bool = True) -> EdgeDisplacementNet:
        super().train(mode)
        self.backbone.eval()  # IRN: the backbone is frozen, BatchNorm statistics included
        return self

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = self.backbone
        with torch.no_grad():
            feats = [b.maxpool(b.act1(b.bn1(b.conv1(x))))]
            for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
                feats.append(layer(feats[-1]))
        return feats

    def _boundary(self, feats: list[torch.Tensor]) -> torch.Tensor:
        h, w = feats[1].shape[-2:]
        edges = [layer(f)[..., :h, :w] for layer, f in zip(self.edge_layers, feats, strict=True)]
        return self.edge_out(torch.cat(edges, 1))

    def boundary(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary logits only (B x 1 x h x w): all the semantic random walk needs."""
        return self._boundary(self.stages(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(boundary logits B x 1 x h x w, displacement B x 2 x h x w or None) on the stride-4 grid.

        The branches share only the frozen features, so the displacement branch never changes
        the boundary branch's training (`irn.displacement: false` gives the same boundaries).
        """
        feats = self.stages(x)
        h, w = feats[1].shape[-2:]
        edge = self._boundary(feats)
        if not self.displacement:
            return edge, None
        dps = [layer(f) for layer, f in zip(self.dp_layers, feats, strict=True)]
        h8, w8 = dps[2].shape[-2:]
        deep = self.dp_fuse_deep(torch.cat([dps[2], dps[3][..., :h8, :w8], dps[4][..., :h8, :w8]], 1))[..., :h, :w]
        return edge, self.dp_out(torch.cat([dps[0], dps[1], deep], 1))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(boundary branch, displacement branch) parameters: IRN gives the second 10x lr."""
        edge = [*self.edge_layers.parameters(), *self.edge_out.parameters()]
        dp = [*self.dp_layers.parameters(), *self.dp_fuse_deep.parameters(), *self.dp_out.parameters()] \
            if self.displacement else []
        return edge, dp


def create_irn_backbone(spec: dict, pretrained: str | bool | None = None, key: str = "irn.pretrained") -> nn.Module:
    """A timm ResNet with features (layer1..layer4) as IRN reads them; `spec` = {name, output_stride}."""
    return create_backbone(spec["name"], pretrained, key=key, features_only=True, out_indices=(1, 2, 3, 4),
                           output_stride=spec["output_stride"])


def edge_map(net: EdgeDisplacementNet, image: np.ndarray, pad_to: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """IRN's EdgeDisplacement inference: the boundary probability (h x w, stride-4 grid of the
    image, h = ceil(H/4)) from the image and its flip, logits averaged before the sigmoid.

    The image is zero-padded (after normalisation) on the right and bottom to at least `pad_to`
    (IRN: its training crop, 512) and to a multiple of the backbone's stride, so GroupNorm sees
    the same canvas as in training.
    """
    h, w = image.shape[:2]
    x = torch.from_numpy(to_chw(normalize(image))).to(device)
    x = torch.stack([x, x.flip(-1)])
    s = net.max_stride
    ph, pw = (-(-max(pad_to, n) // s) * s for n in (h, w))
    x = F.pad(x, (0, pw - w, 0, ph - h))
    gh, gw = (h - 1) // GRID_STRIDE + 1, (w - 1) // GRID_STRIDE + 1
    with torch.no_grad():
        logits = net.boundary(x)[:, 0, :gh, :gw].float()
    return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)


def check_grid(cam_shape: Sequence[int], edge_shape: Sequence[int], stride: int, path: str, image_id: str) -> None:
    if stride != GRID_STRIDE or tuple(cam_shape) != tuple(edge_shape):
        raise PipelineError(f"{path}: CAMs of {image_id!r} are {tuple(cam_shape)} at stride {stride}; the random walk "
                            f"needs IRN's stride-{GRID_STRIDE} grid {tuple(edge_shape)} (cam.cam_stride: 4)")
