"""DeepLab on timm ResNets, as the WSSS final stage uses it (kazuto1011/deeplab-pytorch).

  * DeepLab-v2: backbone at output stride 8 (dilated stages 3-4), ASPP = parallel 3x3 atrous
    convolutions (rates 6/12/18/24) straight to class scores, summed; init N(0, 0.01), bias 0.
  * DeepLab-v3+: ASPP with 1x1, three atrous 3x3 and image-pooling branches (256 channels, BN),
    decoder fusing the stride-4 features (48 channels) through two 3x3 convolutions.
  * `MSC`: kazuto's multi-scale training wrapper (logits at 1.0 and each extra scale, plus
    their pixel-wise max), and `multiscale_logits` for inference (scales + flip, max fusion).

Frozen BatchNorm (kazuto freezes it; it needs pretrained statistics) is a switch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.backbones import FrozenBNBackbone, create_backbone, freeze_batchnorm
from pipeline.errors import PipelineError

ARCHS = ("v2", "v3plus")


class ASPPv2(nn.Module):
    """DeepLab-v2's ASPP: one 3x3 atrous conv per rate to class scores, summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.constant_(conv.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = 0 if k == 1 else dilation
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPPv3(nn.Module):
    """DeepLab-v3's ASPP: 1x1 + atrous 3x3 per rate + image pooling, concatenated and projected."""

    def __init__(self, in_channels: int, rates: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels)] + [_conv_bn_relu(in_channels, channels, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(in_channels, channels))
        self.project = nn.Sequential(_conv_bn_relu(channels * (len(rates) + 2), channels), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class V3PlusHead(nn.Module):
    """ASPP on the last stage + the decoder on the stride-4 features (DeepLab-v3+)."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.aspp = ASPPv3(high_channels, rates)
        self.reduce = _conv_bn_relu(low_channels, 48)
        self.fuse = nn.Sequential(_conv_bn_relu(256 + 48, 256, 3), nn.Dropout(0.5),
                                  _conv_bn_relu(256, 256, 3), nn.Dropout(0.1))
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.aspp(high), size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([x, self.reduce(low)], dim=1)))


class DeepLab(FrozenBNBackbone):
    """DeepLab-v2 or -v3+ on a timm ResNet. `forward` returns logits at `self.stride`."""

    def __init__(self, num_classes: int, arch: str = "v2", backbone: str = "resnet101",
                 pretrained: str | bool | None = None, output_stride: int = 8,
                 aspp_rates: Sequence[int] = (6, 12, 18, 24), frozen_bn: bool = True) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise PipelineError(f"config key deeplab.arch: {arch!r} is not one of {ARCHS}")
        if output_stride not in (8, 16):
            raise PipelineError(f"config key deeplab.output_stride: {output_stride} (expected 8 or 16)")
        self.arch = arch
        indices = (4,) if arch == "v2" else (1, 4)
        self.backbone = create_backbone(backbone, pretrained, key="deeplab.pretrained", features_only=True,
                                        out_indices=indices, output_stride=output_stride)
        channels = self.backbone.feature_info.channels()
        if arch == "v2":
            self.head: nn.Module = ASPPv2(channels[-1], num_classes, aspp_rates)
            self.stride = output_stride
        else:
            self.head = V3PlusHead(channels[0], channels[-1], num_classes, aspp_rates)
            self.stride = self.backbone.feature_info.reduction()[0]
        self.frozen_bn = frozen_bn
        if frozen_bn:
            freeze_batchnorm(self.backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return self.head(feats[-1]) if self.arch == "v2" else self.head(feats[0], feats[-1])

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, head weights, head biases + norm affines): kazuto's 1x / 10x / 20x (no decay) groups."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad]
        return backbone, [p for p in head if p.ndim > 1], [p for p in head if p.ndim <= 1]


def build_deeplab(dl: dict, num_classes: int, pretrained: str | bool | None = None) -> DeepLab:
    """The network of config section `deeplab`; `pretrained` overrides `deeplab.pretrained`
    (inference loads trained weights and needs no backbone init)."""
    return DeepLab(num_classes, arch=dl["arch"], backbone=dl["backbone"], pretrained=pretrained,
                   output_stride=dl["output_stride"], aspp_rates=dl["aspp_rates"], frozen_bn=dl["frozen_bn"])


class MSC(nn.Module):
    """kazuto's multi-scale training: [logits(x), logits at each scale..., pixel-wise max of all
    (resized to the scale-1 logits)]. Without extra scales it returns [logits(x)]."""

    def __init__(self, base: nn.Module, scales: Sequence[float] = ()) -> None:
        super().__init__()
        self.base = base
        self.scales = tuple(scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = self.base(x)
        if not self.scales:
            return [logits]
        size = logits.shape[2:]
        pyramid = [self.base(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
                   for s in self.scales]
        resized = [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pyramid]
        fused = torch.stack([logits, *resized]).amax(0)
        return [logits, *pyramid, fused]


def output_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Logit grid of an HxW input: ceil(H / stride) x ceil(W / stride) (timm ResNets, padded convs)."""
    return -(-size[0] // stride), -(-size[1] // stride)


@torch.no_grad()
def multiscale_logits(net: DeepLab, x: torch.Tensor, scales: Sequence[float], flip: bool) -> torch.Tensor:
    """C x h x w logits of one normalised image (1x3xHxW) on its scale-1 logit grid: every scale
    (and its flip, flipped back) resized to that grid, fused by the pixel-wise max."""
    h, w = x.shape[2:]
    grid = output_size((h, w), net.stride)
    fused = None
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = net(torch.cat([xs, xs.flip(-1)]) if flip else xs).float()
        views = [out[0], out[1].flip(-1)] if flip else [out[0]]
        for v in views:
            v = F.interpolate(v[None], size=grid, mode="bilinear", align_corners=False)[0]
            fused = v if fused is None else torch.maximum(fused, v)
    assert fused is not None, "multiscale_logits needs at least one scale"
    return fused
