"""Stage: train IRN's CAM classifier (the baseline, and the source of CAM seeds).

IRN's recipe (step/train_cam.py): batch 16, 5 epochs, long side rescaled to [320, 640], flip,
crop 512, poly lr 0.1 (classifier x10), weight decay 1e-4, multilabel soft-margin loss.
IRN's PolyOptimizer passes weight_decay as SGD's third positional argument, which is the
momentum: the effective momentum is 1e-4. `cam.momentum` defaults to that value to reproduce
IRN; 0.9 is what was presumably intended (see docs/DEVIATIONS.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.config import require
from pipeline.data.classification import CAMTrainDataset
from pipeline.errors import PipelineError, cli_entry
from pipeline.models.cam_net import CAMNet, multilabel_loss
from pipeline.provenance import stage_code_hash
from pipeline.runtime import (
    ResumableLoader,
    TrainLoopConfig,
    TrainState,
    autocast,
    is_main,
    rank_device,
    run_loop,
    save_final,
    select_device,
    setup_precision,
    unwrap,
    wrap_ddp,
)
from pipeline.stage import gpu_stage_parser, open_indexed, parse, run_gpu_job, split_ids

log = logging.getLogger("pipeline.train_cam")


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


def _train(rank: int, world: int, cfg: dict, index_path: str, out: str, ckpt_dir: str, metrics: str) -> None:
    cam, seed = require(cfg, "cam"), int(cfg.get("seed", 0))
    device = rank_device(select_device(require(cfg, "runtime.device")))
    amp = setup_precision(device, require(cfg, "runtime.amp"))
    ds, index = open_indexed(cfg, index_path)
    ids = split_ids(index, "train")
    labels = index["splits"]["train"]["labels"]
    torch.manual_seed(seed)  # identical initial weights on every rank
    net = build_cam_net(cam, ds.num_classes).to(device)
    max_iters = iterations(len(ids), cam, world)
    opt, sched = build_sgd(net, cam, max_iters)
    model = wrap_ddp(net, device)
    data = ResumableLoader(CAMTrainDataset(ds, ids, labels, cam["crop_size"], cam["resize_long"]),
                           cam["batch_size"], seed=seed, num_workers=cam["num_workers"])
    model.train()

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

    state = TrainState(model, opt, sched, data=data, config=cfg, code=stage_code_hash("pipeline.train_cam"))
    run_loop(step, state, TrainLoopConfig(max_iters, cam["ckpt_every"], Path(ckpt_dir), Path(metrics),
                                          seed=seed, desc="train_cam"))
    if is_main():
        save_final(out, unwrap(model).state_dict(), {"cam": cam, "num_classes": ds.num_classes,
                                                      "class_names": ds.class_names, "iterations": max_iters})
        log.info("wrote %s after %d iterations", out, max_iters)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--out", required=True, help="final model (rule output)")
    p.add_argument("--ckpt-dir", required=True, help="intermediate checkpoints (outside the DAG)")
    p.add_argument("--metrics", required=True, help="per-iteration metrics CSV")
    args, cfg = parse(p, argv)
    run_gpu_job(_train, args.gpus, cfg, args.index, args.out, args.ckpt_dir, args.metrics)


if __name__ == "__main__":
    main()
