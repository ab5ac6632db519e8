"""CSD's round 2 (cross-domain semantic decoupling) as a method for the training skeleton.

Same network, optimiser, schedule and classification batches as the baseline
(`pipeline.irn.train`), from the same initialisation; each step adds `csd.paste_batch` paste
pairs: a target (every training image in turn), a single-label source drawn by the
co-occurrence prior of the target's classes, cut out with the baseline's round-1 masks, pasted
as foreground and as background. Loss = multilabel soft-margin on the classification batch +
lambda_fg * L_fg + lambda_bg * L_bg (`pipeline.csd.losses`). The model file has train_cam's
layout, so make_cam/eval_cam apply.
"""

from __future__ import annotations

import logging

import torch

from pipeline.csd.cooccurrence import PasteClassSampler
from pipeline.csd.losses import csd_losses
from pipeline.csd.masks import RoundOneMasks
from pipeline.csd.model import LogitsAndCams
from pipeline.csd.paste import PastePairDataset
from pipeline.errors import PipelineError
from pipeline.irn.model import multilabel_loss
from pipeline.irn.train import build_cam_net, build_sgd, classification_data, iterations
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import is_main, wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan

log = logging.getLogger("pipeline.csd")

# The paste-pair stream's seed offset: independent of the classification stream, which stays
# identical to the baseline's (same seed, same dataset order and augmentation draws).
PASTE_SEED_OFFSET = 7919


def round_one_thresholds(cfg: dict) -> tuple[float, float]:
    """IRN's conf_fg / conf_bg thresholds of the baseline's dual-threshold masks: CSD cuts its
    sources with the baseline's own mask recipe (`masks.methods.baseline`)."""
    recipe = cfg["masks"]["methods"]["baseline"]
    return recipe["fg_threshold"], recipe["bg_threshold"]


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def build(ctx: TrainContext) -> TrainPlan:
    cfg, device, amp = ctx.cfg, ctx.device, ctx.amp
    cam, csd = cfg["cam"], cfg["csd"]
    masks = RoundOneMasks(ctx.inputs["source_masks"], csd["source_masks"], *round_one_thresholds(cfg))
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

    net = build_cam_net(cam, ctx.ds.num_classes).to(device)
    max_iters = iterations(len(ctx.ids), cam, ctx.world)
    start_iter = csd["start_epoch"] * (max_iters // cam["epochs"])
    opt, sched = build_sgd(net, cam, max_iters)
    model = wrap_ddp(LogitsAndCams(net), device)
    data = classification_data(ctx)
    pairs = ResumableLoader(PastePairDataset(ctx.ds, ctx.ids, ctx.labels, masks, sampler, cam["crop_size"],
                                             cam["resize_long"], csd["source_background"]),
                            csd["paste_batch"], seed=ctx.seed + PASTE_SEED_OFFSET, num_workers=cam["num_workers"])

    def step(it: int) -> dict[str, float]:
        batch = next(data)
        x, y = batch["image"].to(device), batch["label"].to(device)
        logs: dict[str, float] = {}
        if it < start_iter:
            with autocast(device, amp):
                (logits, _), = model(x)
            loss = cls = multilabel_loss(logits.float(), y)
        else:
            p = _to(next(pairs), device)
            net.eval()  # the source prior: same network, eval mode, no gradient (PSD_WSSS)
            with torch.no_grad(), autocast(device, amp):
                source_cam = net.cam(p["source"]).float()
            net.train()
            with autocast(device, amp):
                (logits, _), (fg_logits, fg_cam), (bg_logits, bg_cam) = model(x, p["fg_image"], p["bg_image"])
            cls = multilabel_loss(logits.float(), y)
            if csd["paste_cls_loss"]:
                pasted = torch.cat([fg_logits, bg_logits]).float()
                cls = cls + multilabel_loss(pasted, torch.cat([p["fg_label"], p["bg_label"]]))
            terms = csd_losses(source_cam, fg_cam.float(), bg_cam.float(), p, csd)
            loss = cls + csd["lambda_fg"] * terms["fg"] + csd["lambda_bg"] * terms["bg"]
            logs = {k: v.item() for k, v in terms.items()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), "cls": cls.item(), **logs}

    return TrainPlan(model, opt, sched, data, step, max_iters, cam["ckpt_every"], weights=net.state_dict,
                     meta={"cam": cam, "csd": csd}, extra={"pairs": pairs})
