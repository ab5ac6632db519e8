"""DeepLab training as a method for the training skeleton: DeepLab on a method's refined pseudo masks, or on GT masks (method `gt`, the ceiling).

The WSSS recipe (kazuto1011/deeplab-pytorch configs/voc12.yaml, configs/voc12.yaml here):
DeepLab-v2 ResNet-101 at output stride 8, crop 321, batch 5 x iter_size 2, 20k iterations,
SGD momentum 0.9, lr 2.5e-4 (ASPP weights x10, biases x20 without decay), weight decay 5e-4,
poly 0.9 stepped every 10 iterations, random scale {0.5..1.5} + flip, ignore 255, MSC loss on
the 1.0 / 0.75 / 0.5 logits and their max. Pseudo-mask pixels marked uncertain (255) are
ignored like GT void pixels. The fully supervised ceiling trains the same network on the GT
masks of the same training images.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from pipeline.data.labels import IGNORE_INDEX
from pipeline.deeplab.data import MaskSource, SegTrainDataset
from pipeline.deeplab.model import MSC, DeepLab, build_deeplab
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import unwrap, wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan


def class_weights(target: torch.Tensor, num_classes: int, power: float) -> torch.Tensor:
    """Per-batch inverse class frequency to the power `power`, scaled to mean 1 over the classes
    present in the batch (absent classes get 1; they weigh nothing). 0 gives all ones."""
    valid = target[target != IGNORE_INDEX]
    counts = torch.bincount(valid, minlength=num_classes)[:num_classes].float()
    present = counts > 0
    weights = torch.ones(num_classes, device=target.device)
    if power and present.any():
        inv = (counts.sum() / counts[present]) ** power
        weights[present] = inv / inv.mean()
    return weights


def seg_loss(logits: torch.Tensor, mask: torch.Tensor, loss_at: str, class_balance: float = 0.0) -> torch.Tensor:
    """Cross-entropy ignoring 255. kazuto shrinks the labels to the logits (nearest);
    `input` upsamples the logits to the labels instead. `class_balance` > 0 weights each class
    by its inverse pixel frequency in the batch to that power (kazuto: 0, plain cross-entropy)."""
    if loss_at == "logits":
        target = F.interpolate(mask[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
    else:
        logits = F.interpolate(logits, size=mask.shape[1:], mode="bilinear", align_corners=False)
        target = mask
    weight = class_weights(target, logits.shape[1], class_balance) if class_balance else None
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)


def build_optimizer(net: DeepLab, dl: dict, max_iters: int):
    """SGD with kazuto's 1x / 10x / 20x groups and the poly schedule stepped every `poly_step`."""
    backbone, head_w, head_b = net.param_groups()
    lr, wd = dl["lr"], dl["weight_decay"]
    groups = [
        {"params": backbone, "lr": lr, "weight_decay": wd},
        {"params": head_w, "lr": lr * dl["head_lr_mult"], "weight_decay": wd},
        {"params": head_b, "lr": lr * dl["head_bias_lr_mult"], "weight_decay": 0.0},
    ]
    opt = torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=dl["momentum"])
    step, power = dl["poly_step"], dl["poly_power"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(0.0, 1 - (it // step * step) / max_iters) ** power)
    return opt, sched


def build(ctx: TrainContext) -> TrainPlan:
    dl, device, amp = ctx.cfg["deeplab"], ctx.device, ctx.amp
    method, masks_path = ctx.inputs["method"], ctx.inputs["masks"]
    net = build_deeplab(dl, ctx.ds.num_classes, pretrained=dl.get("pretrained")).to(device)
    max_iters, iter_size = int(dl["iterations"]), int(dl["iter_size"])
    opt, sched = build_optimizer(net, dl, max_iters)
    model = wrap_ddp(MSC(net, dl["msc_scales"]), device)
    dataset = SegTrainDataset(ctx.ds, ctx.ids, MaskSource(ctx.ds, method, masks_path), dl["crop_size"],
                              dl["train_scales"])
    data = ResumableLoader(dataset, dl["batch_size"], seed=ctx.seed, num_workers=dl["num_workers"])

    def step(it: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(iter_size):
            batch = next(data)
            x, y = batch["image"].to(device), batch["mask"].to(device)
            # DDP: reduce gradients once per iteration, after the last accumulated batch.
            last = k == iter_size - 1
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast(device, amp):
                    outs = model(x)
                loss = sum(seg_loss(o.float(), y, dl["loss_at"], dl["class_balance"]) for o in outs) / iter_size
                loss.backward()
            total += loss.item()
        opt.step()
        sched.step()
        return {"loss": total}

    return TrainPlan(model, opt, sched, data, step, max_iters, dl["ckpt_every"],
                     weights=lambda: unwrap(model).base.state_dict(),
                     meta={"deeplab": dl, "method": method, "stride": net.stride},
                     resume_key={"method": method, "masks": masks_path}, desc=f"train_deeplab[{method}]")
