"""SeCo's tag-guided contrastive losses (`model/losses.py`: LIL_Loss, LIG_Loss).

Tags: c >= 1 a class, 0 background, -1 uncertain (co-occurrence). Two forms per loss:

* "official" follows the released code term by term, which is what produced the paper's
  numbers (reference section 10.5):
    LIL: logits q.k/tau minus the (detached) row max; rows of uncertain anchors and columns of
    uncertain keys are set to 0 and every entry whose exp is exactly 1 is dropped from the
    denominator (this also drops the row max itself). log_prob = pos_logit - log Z is summed over
    ALL M columns (not only positives) and divided by the number of positive pairs in the whole
    batch; a row counts only if Z > 0 and its sum is negative. Averaged over the N anchors.
    LIG: logits q.p/tau without max subtraction over the prototypes of the classes tagged in the
    batch; -sum over positive pairs of [s_ic - log Z_i] / #positive pairs.
* "supcon" is the textbook supervised-contrastive / cross-entropy version presumably intended:
    LIL: -mean over anchors of mean_{p in P(i)} log softmax over the certain keys.
    LIG: cross entropy over the prototypes of the tagged classes, mean over class-tagged anchors.

Tag rectification (the paper's "denoise", in LIL, shared by both forms): per anchor, compare the
masked positive-logit row with its mean; if #(below the mean) / #(at or above it) > 10, the
anchor's tag becomes 0 and its positives are cleared. LIG uses the revised tags.
"""

from __future__ import annotations

import torch

from pipeline.data.labels import UNCERTAIN

CONTRAST_FORMS = ("official", "supcon")
RECTIFY_RATIO = 10.0


def rectify_tags(pos_logits: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(revised tags, bool mask of the revised anchors).

    `pos_logits` is N x M: the anchor-key logits at positive pairs, 0 elsewhere. An anchor whose
    row has more than 10 times as many entries below the row mean as at or above it gets tag 0.
    """
    with torch.no_grad():
        mean = pos_logits.mean(dim=1, keepdim=True)
        below = (pos_logits < mean).sum(dim=1).to(torch.float64)
        at_or_above = (pos_logits >= mean).sum(dim=1).to(torch.float64)
        noisy = below / (at_or_above + 1e-6) > RECTIFY_RATIO
    return torch.where(noisy, torch.zeros_like(tags), tags), noisy


def _zero_loss(ref: torch.Tensor) -> torch.Tensor:
    return ref.sum() * 0.0  # keeps the graph, so backward reaches every parameter with zeros


def lil_loss(q: torch.Tensor, keys: torch.Tensor, tags: torch.Tensor, key_tags: torch.Tensor,
             temperature: float = 0.08, base_temperature: float = 0.08,
             form: str = "official") -> tuple[torch.Tensor, torch.Tensor]:
    """Local-to-local contrast of anchors `q` (N x D) against `keys` (M x D, current keys then the
    queue). `tags` (N,) and `key_tags` (M,) are integer tags. Returns (loss, revised tags)."""
    if form not in CONTRAST_FORMS:
        raise ValueError(f"unknown contrast form {form!r}")
    tags = tags.long().reshape(-1)
    key_tags = key_tags.long().reshape(-1)
    logits = q @ keys.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    anchor_out = tags == UNCERTAIN
    key_out = key_tags == UNCERTAIN
    pos_mask = (tags[:, None] == key_tags[None, :]) & ~anchor_out[:, None]
    logits = logits.masked_fill(anchor_out[:, None], 0.0)
    tags, noisy = rectify_tags(logits * pos_mask, tags)
    pos_mask = pos_mask & ~noisy[:, None]
    scale = temperature / base_temperature
    if form == "official":
        pos = logits * pos_mask
        logits = logits.masked_fill(key_out[None, :], 0.0)
        exp = torch.exp(logits)
        exp = exp * (exp != 1.0)
        z = exp.sum(dim=1)
        row = (pos - torch.log(z[:, None] + 1e-12)).sum(dim=1)  # over all M columns, as the code
        num_pos = int(torch.count_nonzero(pos.detach()))
        if num_pos == 0:
            return _zero_loss(q), tags
        keep = (z > 0) & (row < 0)
        return -scale * row[keep].sum() / num_pos / q.shape[0], tags
    log_prob = logits - torch.logsumexp(logits.masked_fill(key_out[None, :], float("-inf")), dim=1, keepdim=True)
    count = pos_mask.sum(dim=1)
    keep = count > 0
    if not bool(keep.any()):
        return _zero_loss(q), tags
    mean_pos = (log_prob * pos_mask).sum(dim=1)[keep] / count[keep]
    return -scale * mean_pos.mean(), tags


def lig_loss(q: torch.Tensor, prototypes: torch.Tensor, tags: torch.Tensor, temperature: float = 0.1,
             base_temperature: float = 0.1, form: str = "official") -> torch.Tensor:
    """Local-to-global contrast of anchors `q` (N x D) against class `prototypes` (C-1 x D, row c-1
    is class c): positive = the prototype of the anchor's class tag, negatives = prototypes of the
    classes tagged somewhere in the batch. Anchors tagged 0 or -1 contribute nothing."""
    if form not in CONTRAST_FORMS:
        raise ValueError(f"unknown contrast form {form!r}")
    tags = tags.long().reshape(-1)
    num_cls = prototypes.shape[0]
    classes = torch.arange(1, num_cls + 1, device=q.device)
    pos_mask = tags[:, None] == classes[None, :]
    present = torch.zeros(num_cls, dtype=torch.bool, device=q.device)
    tagged = tags[(tags > 0) & (tags <= num_cls)]
    present[tagged - 1] = True
    logits = q @ prototypes.T / temperature
    scale = temperature / base_temperature
    if form == "official":
        pos = logits * pos_mask
        exp = torch.exp(logits * present[None, :])
        exp = exp * (exp != 1.0)
        z = exp.sum(dim=1, keepdim=True)
        log_prob = (pos - torch.log(z + 1e-12)) * (pos != 0)
        total = log_prob[z[:, 0] > 0].sum()
        den = int(pos_mask.sum()) or q.shape[0]
        return -scale * total / den
    keep = pos_mask.any(dim=1)
    if not bool(keep.any()):
        return _zero_loss(q)
    log_prob = logits - torch.logsumexp(logits.masked_fill(~present[None, :], float("-inf")), dim=1, keepdim=True)
    return -scale * (log_prob * pos_mask).sum(dim=1)[keep].mean()
