"""Image-level classification losses of the CAM heads (main and auxiliary)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multilabel_cls_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`multilabel_soft_margin_loss`: mean over classes and images of the per-class logistic loss.

    `logits` B x (C-1) (global-max-pooled CAM head), `labels` B x (C-1) multi-hot.
    """
    return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))
