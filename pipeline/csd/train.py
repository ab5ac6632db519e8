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

from pipeline.csd.adapter import csd_step, paste_pairs
from pipeline.csd.masks import RoundOneMasks
from pipeline.csd.model import LogitsAndCams
from pipeline.irn.train import build_cam_net, build_sgd, classification_data, iterations
from pipeline.runtime.distributed import wrap_ddp
from pipeline.runtime.train import TrainContext, TrainPlan


def round_one_thresholds(cfg: dict) -> tuple[float, float]:
    """IRN's conf_fg / conf_bg thresholds of the baseline's dual-threshold masks: CSD cuts its
    sources with the baseline's own mask recipe (`masks.methods.baseline`)."""
    recipe = cfg["masks"]["methods"]["baseline"]
    return recipe["fg_threshold"], recipe["bg_threshold"]


def build(ctx: TrainContext) -> TrainPlan:
    cfg, device, amp = ctx.cfg, ctx.device, ctx.amp
    cam, csd = cfg["cam"], cfg["csd"]
    masks = RoundOneMasks(ctx.inputs["source_masks"], csd["source_masks"], *round_one_thresholds(cfg))
    net = build_cam_net(cam, ctx.ds.num_classes).to(device)
    max_iters = iterations(len(ctx.ids), cam, ctx.world)
    start_iter = csd["start_epoch"] * (max_iters // cam["epochs"])
    opt, sched = build_sgd(net, cam, max_iters)
    adapter = LogitsAndCams(net)
    model = wrap_ddp(adapter, device)
    data = classification_data(ctx)
    pairs = paste_pairs(ctx, masks, csd, cam["crop_size"], cam["resize_long"], cam["num_workers"])

    step = csd_step(model, adapter, data, pairs, start_iter, csd, opt, sched, device, amp)
    return TrainPlan(model, opt, sched, data, step, max_iters, cam["ckpt_every"], weights=net.state_dict,
                     meta={"cam": cam, "csd": csd}, extra={"pairs": pairs})
