"""Losses on the segmentation decoder: background/foreground-balanced CE (SeCo `get_seg_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data.labels import IGNORE_INDEX


def balanced_seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """0.5 * (mean CE over background pixels + mean CE over foreground pixels).

    `logits` B x C x H x W, `labels` B x H x W (0 background, 1..C-1, `ignore_index`). Each mean
    is sum / (count + 1e-6), so a crop without background or foreground pixels adds 0 instead of
    ToCo's NaN.
    """
    labels = labels.long()
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    bg = labels == 0
    fg = (labels != 0) & (labels != ignore_index)
    bg_loss = (ce * bg).sum() / (bg.sum() + 1e-6)
    fg_loss = (ce * fg).sum() / (fg.sum() + 1e-6)
    return 0.5 * (bg_loss + fg_loss)
