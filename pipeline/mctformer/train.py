"""MCTformer-V2 training (main.py + engine.py `train_one_epoch`) as a method for the training skeleton.

The official recipe: DeiT-S from ImageNet weights, 60 epochs of batch 64 at 224 px, drop path 0.1,
AdamW (weight decay 0.05, none on biases, 1-d parameters, class tokens and positions), learning
rate lr * batch * GPUs / 512 (5e-4 -> 6.25e-5 at batch 64 on one GPU), timm's cosine schedule
stepped once per epoch (5 warm-up epochs from 1e-6, floor 1e-5), timm's ImageNet training
transform (random resized crop, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25,
bicubic), loss = MLSM(class-token logits) + MLSM(PatchCAM logits).

The schedule is applied per iteration with the value of the iteration's epoch, reproducing the
official per-epoch stepping: `lr_scheduler.step(epoch)` runs after epoch `epoch`, so epoch e
trains with the cosine value at t = e - 1 (epoch 0 with the warm-up start).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.data.base import SegDataset
from pipeline.data.classification import CAMTrainDataset, label_vector
from pipeline.errors import PipelineError
from pipeline.mctformer.model import MCTformerV2, build_mctformer, mctformer_loss
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import unwrap, wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan


class TimmTrainDataset(Dataset):
    """The official training transform: timm's `create_transform(is_training=True)` on the PIL
    image. timm draws from Python's `random` and torch's global RNG; both are seeded per item
    from NumPy's global RNG (which `ResumableLoader` seeds per draw) and restored afterwards, so
    crops are reproducible, resumable, and leave the training's own RNG streams untouched."""

    def __init__(self, ds: SegDataset, ids: list[str], labels: dict[str, list[int]], mct: dict) -> None:
        from pipeline._compat import import_timm

        timm = import_timm()
        self.ds, self.ids, self.labels = ds, ids, labels
        self.transform = timm.data.create_transform(
            input_size=mct["crop_size"], is_training=True, color_jitter=0.4, auto_augment=mct["auto_augment"],
            interpolation="bicubic", re_prob=mct["reprob"], re_mode="pixel", re_count=1)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        seed = int(np.random.randint(0, 2**31))
        image_id = self.ids[i]
        img = Image.fromarray(self.ds.image(image_id))
        state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                torch.manual_seed(seed)
                x = self.transform(img)
        finally:
            random.setstate(state)
        return {"image": x, "label": torch.from_numpy(label_vector(self.labels[image_id], self.ds.num_classes)),
                "index": i}


def train_dataset(ctx: TrainContext) -> Dataset:
    mct = ctx.cfg["mctformer"]
    if mct["augment"] == "timm":
        return TimmTrainDataset(ctx.ds, ctx.ids, ctx.labels, mct)
    # "irn": IRN's resize-long + flip + crop (the CAM classifier's), for small from-scratch runs
    return CAMTrainDataset(ctx.ds, ctx.ids, ctx.labels, mct["crop_size"], mct["resize_long"])


def scaled_lr(mct: dict, world: int) -> float:
    """main.py's linear scaling: lr * batch * world / 512."""
    return mct["lr"] * mct["batch_size"] * world / 512.0


def epoch_lr(epoch: int, mct: dict, peak: float) -> float:
    """The learning rate epoch `epoch` trains with: timm's CosineLRScheduler (t_initial = epochs,
    warm-up from `warmup_lr` over `warmup_epochs`, floor `min_lr`, one cycle, no warm-up prefix)
    evaluated at t = max(epoch - 1, 0), the official per-epoch stepping."""
    t = max(epoch - 1, 0)
    warm, lo = mct["warmup_epochs"], mct["min_lr"]
    if t < warm:
        return mct["warmup_lr"] + t * (peak - mct["warmup_lr"]) / warm
    if t >= mct["epochs"]:
        return lo
    return lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * t / mct["epochs"]))


def iterations(num_images: int, mct: dict, world: int) -> tuple[int, int]:
    """(iterations per epoch, total): full batches only (the official loader drops the last)."""
    per_epoch = num_images // (mct["batch_size"] * world)
    if per_epoch < 1:
        raise PipelineError(f"config key mctformer.batch_size: {mct['batch_size']} x {world} exceeds the "
                            f"{num_images} training images")
    return per_epoch, per_epoch * mct["epochs"]


def build_optimizer(net: MCTformerV2, mct: dict, world: int, per_epoch: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with timm's weight-decay filter (none on 1-d parameters, biases and the
    `no_weight_decay` names) and the per-epoch cosine schedule as a per-iteration LambdaLR."""
    skip = net.no_weight_decay()
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(p)
    peak = scaled_lr(mct, world)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                             {"params": decay, "weight_decay": mct["weight_decay"]}], lr=peak, eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: epoch_lr(it // per_epoch, mct, peak) / peak)
    return opt, sched


def build(ctx: TrainContext) -> TrainPlan:
    mct, device, amp = ctx.cfg["mctformer"], ctx.device, ctx.amp
    net = build_mctformer(mct, ctx.ds.num_classes, mct.get("pretrained")).to(device)
    per_epoch, max_iters = iterations(len(ctx.ids), mct, ctx.world)
    opt, sched = build_optimizer(net, mct, ctx.world, per_epoch)
    model = wrap_ddp(net, device)
    data = ResumableLoader(train_dataset(ctx), mct["batch_size"], seed=ctx.seed, num_workers=mct["num_workers"])

    def step(it: int) -> dict[str, float]:
        batch = next(data)
        x, y = batch["image"].to(device), batch["label"].to(device)
        with autocast(device, amp):
            out = model(x)
        loss, parts = mctformer_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), **parts}

    return TrainPlan(model, opt, sched, data, step, max_iters, mct["ckpt_every"],
                     weights=lambda: unwrap(model).state_dict(), meta={"mctformer": mct})
