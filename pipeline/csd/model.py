"""IRN's CAM classifier as a CSD model (`pipeline.csd.adapter`): the classification batch and the
pasted images in one DDP forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.csd.adapter import PastedMaps
from pipeline.irn.model import CAMNet, multilabel_loss


class LogitsAndCams(nn.Module):
    """The adapter of a CAMNet: image logits for the classification batch; for each pasted batch
    its logits and ReLU'd CAMs (the same maps for L_fg and L_bg), from one backbone pass each.

    The batches run as separate passes (as PSD_WSSS's three model calls, so BatchNorm statistics
    are per batch and crops may differ) inside one module call: DDP allows one forward per
    backward. Its state dict is the CAMNet's under `net.`; the stage saves `net`.
    """

    def __init__(self, net: CAMNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, *pasted: torch.Tensor) -> tuple[torch.Tensor, list[PastedMaps]]:
        out = []
        for i, batch in enumerate((x, *pasted)):
            f = self.net.features(batch)
            logits = self.net.classifier(F.adaptive_avg_pool2d(f, 1)).flatten(1)  # = CAMNet.forward
            if i == 0:
                out.append(logits)
                continue
            cams = F.relu(F.conv2d(f, self.net.classifier.weight))  # = CAMNet.cam
            out.append(PastedMaps(logits, cams, cams))
        return out[0], out[1:]

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return multilabel_loss(logits.float(), labels), {}

    def source_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.cam(x)
