"""One factory over timm backbones, with offline weights.

`pretrained` is one of:
  * null / false  - random init (the embedded synthetic default; nothing is downloaded)
  * "hub"         - timm's default pretrained tag from the model hub (needs network)
  * a file path   - local weights, loaded through timm's own filters (position-embedding
                    resize, classifier adaptation, features_only) via pretrained_cfg_overlay
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from pipeline._compat import import_timm
from pipeline.errors import PipelineError


def create_backbone(name: str, pretrained: str | bool | None = None, *, key: str = "model.pretrained",
                    **kwargs) -> nn.Module:
    """`timm.create_model(name, **kwargs)` with the weight source resolved as documented above."""
    timm = import_timm()
    if pretrained in (None, False, "", "none"):
        return _create(timm, name, False, key, **kwargs)
    if pretrained in (True, "hub"):
        return _create(timm, name, True, key, **kwargs)
    path = Path(str(pretrained))
    if not path.is_file():
        raise PipelineError(f"config key {key}: weight file {path} not found")
    return _create(timm, name, True, key, pretrained_cfg_overlay={"file": str(path)}, **kwargs)


def _create(timm, name: str, pretrained: bool, key: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise PipelineError(f"config key {key.rsplit('.', 1)[0]}.backbone: unknown timm model {name!r}") from exc
        raise


def freeze_batchnorm(module: nn.Module) -> None:
    """IRN's FixedBatchNorm: running statistics and affine parameters are kept as loaded."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


class FrozenBNBackbone(nn.Module):
    """A network with a `backbone` whose BatchNorm stays frozen through `train()` when
    `self.frozen_bn` is set (IRN's FixedBatchNorm, kazuto's DeepLab)."""

    backbone: nn.Module
    frozen_bn: bool = False

    def train(self, mode: bool = True) -> FrozenBNBackbone:
        super().train(mode)
        if self.frozen_bn:
            freeze_batchnorm(self.backbone)
        return self
