"""IRN's CAM classifier training (step/train_cam.py), as a method for the training skeleton.

IRN's recipe: batch 16, 5 epochs, long side rescaled to [320, 640], flip, crop 512, poly lr 0.1
(classifier x10), weight decay 1e-4, multilabel soft-margin loss. IRN's PolyOptimizer passes
weight_decay as SGD's third positional argument, which is the momentum: the effective momentum
is 1e-4. `cam.momentum` defaults to that value to reproduce IRN; 0.9 is what was presumably
intended (see docs/DEVIATIONS.md).
"""

from __future__ import annotations

import torch

from pipeline.data.classification import CAMTrainDataset
from pipeline.errors import PipelineError
from pipeline.irn.model import CAMNet, multilabel_loss
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import unwrap, wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan


def build_cam_net(cam: dict, num_classes: int) -> CAMNet:
    return CAMNet(num_classes - 1, backbone=cam["backbone"], pretrained=cam.get("pretrained"),
                  frozen_bn=cam["frozen_bn"], detach_stage=cam["detach_stage"], output_stride=cam["output_stride"])


def build_sgd(net: CAMNet, cam: dict, max_iters: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """IRN's PolyOptimizer as plain SGD + a poly LambdaLR (lr * (1 - it/T)^power)."""
    backbone, head = net.param_groups()
    groups = [
        {"params": backbone, "lr": cam["lr"], "weight_decay": cam["weight_decay"]},
        {"params": head, "lr": cam["lr"] * cam["classifier_lr_mult"], "weight_decay": cam["weight_decay"]},
    ]
    opt = torch.optim.SGD(groups, lr=cam["lr"], momentum=cam["momentum"])
    power = cam["poly_power"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(0.0, 1 - it / max_iters) ** power)
    return opt, sched


def iterations(num_images: int, cam: dict, world: int) -> int:
    """IRN: max_step = (N // batch) * epochs, with the batch per process times the world size."""
    per_epoch = num_images // (cam["batch_size"] * world)
    if per_epoch < 1:
        raise PipelineError(f"config key cam.batch_size: {cam['batch_size']} x {world} exceeds the {num_images} training images")
    return per_epoch * cam["epochs"]


def classification_data(ctx: TrainContext) -> ResumableLoader:
    """IRN's classification batches (CSD keeps exactly these, so its stream equals the baseline's)."""
    cam = ctx.cfg["cam"]
    return ResumableLoader(CAMTrainDataset(ctx.ds, ctx.ids, ctx.labels, cam["crop_size"], cam["resize_long"]),
                           cam["batch_size"], seed=ctx.seed, num_workers=cam["num_workers"])


def build(ctx: TrainContext) -> TrainPlan:
    cam, device, amp = ctx.cfg["cam"], ctx.device, ctx.amp
    net = build_cam_net(cam, ctx.ds.num_classes).to(device)
    max_iters = iterations(len(ctx.ids), cam, ctx.world)
    opt, sched = build_sgd(net, cam, max_iters)
    model = wrap_ddp(net, device)
    data = classification_data(ctx)

    def step(it: int) -> dict[str, float]:
        batch = next(data)
        x, y = batch["image"].to(device), batch["label"].to(device)
        with autocast(device, amp):
            loss = multilabel_loss(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item()}

    return TrainPlan(model, opt, sched, data, step, max_iters, cam["ckpt_every"],
                     weights=lambda: unwrap(model).state_dict(), meta={"cam": cam})
