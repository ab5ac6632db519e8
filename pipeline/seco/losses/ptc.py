"""PTC, ToCo's patch token contrast (`get_masked_ptc_loss`, `label_to_aff_mask`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data.labels import IGNORE_INDEX


def affinity_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """B x hw x hw pairwise targets from token labels (B x h x w): 1 same label, 0 different,
    `ignore_index` where either token is ignored and on the diagonal."""
    b = labels.shape[0]
    flat = labels.reshape(b, -1)
    aff = (flat[:, :, None] == flat[:, None, :]).long()
    ignored = flat == ignore_index
    aff = aff.masked_fill(ignored[:, :, None] | ignored[:, None, :], ignore_index)
    eye = torch.eye(flat.shape[1], dtype=torch.bool, device=labels.device)
    return aff.masked_fill(eye[None], ignore_index)


def ptc_loss(tokens: torch.Tensor, aff: torch.Tensor) -> torch.Tensor:
    """0.5 * (1 - sum_pos |cos| / (n_pos + 1)) + 0.5 * sum_neg |cos| / (n_neg + 1).

    `tokens` B x D x h x w (final patch tokens), `aff` B x hw x hw from `affinity_labels`.
    """
    b, d = tokens.shape[:2]
    x = F.normalize(tokens.reshape(b, d, -1), p=2, dim=1, eps=1e-8)
    cos = torch.matmul(x.transpose(1, 2), x).abs()
    pos = aff == 1
    neg = aff == 0
    return 0.5 * (1 - (cos * pos).sum() / (pos.sum() + 1)) + 0.5 * (cos * neg).sum() / (neg.sum() + 1)
