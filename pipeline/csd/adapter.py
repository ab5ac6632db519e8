"""What CSD needs from a CAM model, and the CSD step every model shares.

CSD's copy-paste (`pipeline.csd.paste`) and losses (`pipeline.csd.losses`) see only maps:
B x C x h x w on the model's CAM grid (PSD_WSSS's 16x16 patches, IRN's stride-16 CAM cells),
whatever network made them. A model takes part through an adapter, an `nn.Module` that holds
the trained network as `net` and provides:

  forward(x, *pasted)              one module call (one DDP forward per backward): the raw output
                                   of the classification batch `x` and, per pasted batch, a
                                   `PastedMaps` (raw output, maps for L_fg, maps for L_bg);
  classification_loss(out, labels) the model's own loss on a raw output -> (loss, logs);
  source_maps(x)                   the maps of the source images (`source_prior` calls it in
                                   eval mode without gradient).

Adapters: `pipeline.csd.model.LogitsAndCams` (IRN's ResNet CAM classifier) and
`pipeline.csd.mctformer.MCTformerMaps` (MCTformer-V2's attention-refined maps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from pipeline.csd.cooccurrence import PasteClassSampler
from pipeline.csd.losses import csd_losses
from pipeline.csd.masks import RoundOneMasks
from pipeline.csd.paste import PastePairDataset
from pipeline.errors import PipelineError
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import is_main
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext

log = logging.getLogger("pipeline.csd")

# The paste-pair stream's seed offset: independent of the classification stream, which stays
# identical to the baseline's (same seed, same dataset order and augmentation draws).
PASTE_SEED_OFFSET = 7919


class PastedMaps(NamedTuple):
    out: Any                  # the model's raw output on the pasted batch (its classification loss input)
    fg_maps: torch.Tensor     # B x C x h x w, what L_fg (and its purity weights) sees
    bg_maps: torch.Tensor     # B x C x h x w, what L_bg (and its purity weights) sees


def source_prior(adapter: nn.Module, x: torch.Tensor, device: torch.device, amp: str) -> torch.Tensor:
    """The source images' maps from the network being trained, in eval mode and without
    gradient (PSD_WSSS), as float32; the network's train/eval mode is restored afterwards."""
    net = adapter.net
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), autocast(device, amp):
            return adapter.source_maps(x).float()
    finally:
        net.train(was_training)


def csd_step_loss(model: nn.Module, adapter: nn.Module, x: torch.Tensor, y: torch.Tensor, pairs: dict | None,
                  csd: dict, device: torch.device, amp: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(total loss, classification loss, logs) of one CSD step.

    `model` is the adapter as the step calls it (DDP-wrapped or not). Without `pairs` (before
    `csd.start_epoch`) only the classification batch runs. Otherwise the source prior, then one
    call with the classification batch and both pasted batches, then
    loss = the model's classification loss (+ the same on the pasted images when
    `csd.paste_cls_loss`, averaged over FG and BG pastes) + lambda_fg * L_fg + lambda_bg * L_bg.
    """
    if pairs is None:
        with autocast(device, amp):
            out, _ = model(x)
        cls, logs = adapter.classification_loss(out, y)
        return cls, cls, logs
    source = source_prior(adapter, pairs["source"], device, amp)
    with autocast(device, amp):
        out, (fg, bg) = model(x, pairs["fg_image"], pairs["bg_image"])
    cls, logs = adapter.classification_loss(out, y)
    if csd["paste_cls_loss"]:
        fg_cls, _ = adapter.classification_loss(fg.out, pairs["fg_label"])
        bg_cls, _ = adapter.classification_loss(bg.out, pairs["bg_label"])
        cls = cls + 0.5 * (fg_cls + bg_cls)
    terms = csd_losses(source, fg.fg_maps.float(), bg.bg_maps.float(), pairs, csd)
    loss = cls + csd["lambda_fg"] * terms["fg"] + csd["lambda_bg"] * terms["bg"]
    return loss, cls, {**logs, **{k: v.item() for k, v in terms.items()}}


def csd_step(model: nn.Module, adapter: nn.Module, data: Any, pairs: ResumableLoader, start_iter: int, csd: dict,
             opt: torch.optim.Optimizer, sched: Any, device: torch.device, amp: str) -> Callable[[int], dict[str, float]]:
    """The training skeleton's step function of a CSD round 2, whatever the CAM model: the next
    classification batch (+ the next paste pairs from `start_iter` on), `csd_step_loss`, one
    optimiser and schedule step."""

    def step(it: int) -> dict[str, float]:
        batch = next(data)
        x, y = batch["image"].to(device), batch["label"].to(device)
        p = to_device(next(pairs), device) if it >= start_iter else None
        loss, cls, logs = csd_step_loss(model, adapter, x, y, p, csd, device, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), "cls": cls.item(), **logs}

    return step


def paste_pairs(ctx: TrainContext, masks: RoundOneMasks, csd: dict, crop: int, resize_long: list[int],
                num_workers: int, short_side: int | None = None) -> ResumableLoader:
    """The resumable stream of `csd.paste_batch` paste pairs per step: every training image in
    turn as the target, a single-label source drawn by the co-occurrence prior of its classes,
    cut with the round-1 `masks`, at the classifier's crop (`pipeline.csd.paste.augment`)."""
    masks.check_covers(ctx.ids)
    try:
        sampler = PasteClassSampler({i: ctx.labels[i] for i in ctx.ids}, ctx.ds.num_classes - 1,
                                    csd["cooccurrence_temperature"])
    except ValueError as exc:
        raise PipelineError(f"dataset index: {exc}") from None
    if is_main():
        missing = [ctx.ds.class_names[c] for c, pool in sampler.by_class.items() if not pool]
        log.info("%d source images (single-label) for %d targets; classes without a source: %s",
                 sum(map(len, sampler.by_class.values())), len(ctx.ids), missing or "none")
    dataset = PastePairDataset(ctx.ds, ctx.ids, ctx.labels, masks, sampler, crop, resize_long,
                               csd["source_background"], short_side)
    return ResumableLoader(dataset, csd["paste_batch"], seed=ctx.seed + PASTE_SEED_OFFSET, num_workers=num_workers)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
