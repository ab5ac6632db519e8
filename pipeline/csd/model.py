"""The classification batch and the pasted images in one DDP forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.irn.model import CAMNet


class LogitsAndCams(nn.Module):
    """For each input batch, (image logits, ReLU'd CAMs) from one backbone pass of a CAMNet.

    The batches run as separate passes (as PSD_WSSS's three model calls, so BatchNorm statistics
    are per batch and crops may differ) inside one module call: DDP allows one forward per
    backward. Its state dict is the CAMNet's under `net.`; the stage saves `net`.
    """

    def __init__(self, net: CAMNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, *batches: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for x in batches:
            f = self.net.features(x)
            logits = self.net.classifier(F.adaptive_avg_pool2d(f, 1)).flatten(1)  # = CAMNet.forward
            cams = F.relu(F.conv2d(f, self.net.classifier.weight))  # = CAMNet.cam
            out.append((logits, cams))
        return out
