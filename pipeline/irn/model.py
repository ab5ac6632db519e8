"""IRN's CAM classifier (net/resnet50_cam.py) on a timm ResNet.

Output stride 16 (last stage stride 1), optionally frozen BatchNorm, frozen stem and the
stage-2 output detached as IRN does (only stages 3-4 and the classifier learn), GAP, and a 1x1
conv classifier without bias trained with the multilabel soft-margin loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.backbones import FrozenBNBackbone, create_backbone, freeze_batchnorm


class CAMNet(FrozenBNBackbone):
    def __init__(self, num_classes: int, backbone: str = "resnet50", pretrained: str | bool | None = None,
                 frozen_bn: bool = True, detach_stage: int = 2, output_stride: int = 16) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, key="cam.pretrained", features_only=True,
                                        out_indices=(1, 2, 3, 4), output_stride=output_stride)
        self.frozen_bn = frozen_bn
        self.detach_stage = detach_stage
        channels = self.backbone.feature_info.channels()[-1]
        self.classifier = nn.Conv2d(channels, num_classes, 1, bias=False)
        if detach_stage > 0:  # IRN freezes conv1/bn1; stages up to detach_stage get no gradient anyway
            for name in ("conv1", "bn1"):
                for p in getattr(self.backbone, name).parameters():
                    p.requires_grad_(False)
        if frozen_bn:
            freeze_batchnorm(self.backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-4 feature map. timm's feature stages 1..4 are IRN's stage2..stage5 inputs."""
        b = self.backbone
        x = b.maxpool(b.act1(b.bn1(b.conv1(x))))
        stages = [b.layer1, b.layer2, b.layer3, b.layer4]
        for i, stage in enumerate(stages, start=1):
            x = stage(x)
            # IRN: stage1 = stem+layer1, stage2 = layer2; `.detach()` after it.
            if i == self.detach_stage:
                x = x.detach()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level logits (B x C) via GAP then the 1x1 classifier."""
        f = self.features(x)
        return self.classifier(F.adaptive_avg_pool2d(f, 1)).flatten(1)

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Class activation maps (B x C x h x w) at the feature stride, ReLU'd as IRN."""
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone params that learn, classifier params): IRN gives the classifier 10x lr."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return backbone, list(self.classifier.parameters())


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(logits, labels)
