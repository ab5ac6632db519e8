"""Stage: train IRN's CAM classifier with CSD (cross-domain semantic decoupling), round 2.

Same network, optimiser, schedule and classification batches as the baseline (train_cam), from
the same initialisation; each step adds `csd.paste_batch` paste pairs: a target (every training
image in turn), a single-label source drawn by the co-occurrence prior of the target's classes,
cut out with the baseline's round-1 masks, pasted as foreground and as background. Loss =
multilabel soft-margin on the classification batch + lambda_fg * L_fg + lambda_bg * L_bg
(pipeline/csd/losses.py). Writes the same model file as train_cam, so make_cam/eval_cam apply.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.config import require
from pipeline.csd.cooccurrence import PasteClassSampler
from pipeline.csd.losses import csd_losses
from pipeline.csd.masks import RoundOneMasks
from pipeline.csd.model import LogitsAndCams
from pipeline.csd.paste import PastePairDataset
from pipeline.data.classification import CAMTrainDataset
from pipeline.errors import PipelineError, cli_entry
from pipeline.models.cam_net import multilabel_loss
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
    wrap_ddp,
)
from pipeline.stage import gpu_stage_parser, open_indexed, parse, run_gpu_job, split_ids
from pipeline.train_cam import build_cam_net, build_sgd, iterations

log = logging.getLogger("pipeline.train_csd")

# The paste-pair stream's seed offset: independent of the classification stream, which stays
# identical to the baseline's (same seed, same dataset order and augmentation draws).
PASTE_SEED_OFFSET = 7919


def check_config(cam: dict, csd: dict) -> None:
    if csd["crop_size"] % cam["output_stride"]:
        raise PipelineError(f"config key csd.crop_size: {csd['crop_size']} is not a multiple of "
                            f"cam.output_stride {cam['output_stride']} (losses work on whole CAM cells)")
    if csd["bg_threshold"] > csd["fg_threshold"]:
        raise PipelineError("config key csd.bg_threshold: must not exceed csd.fg_threshold")


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _train(rank: int, world: int, cfg: dict, index_path: str, masks_path: str, out: str, ckpt_dir: str,
           metrics: str) -> None:
    cam, csd, seed = require(cfg, "cam"), require(cfg, "csd"), int(cfg.get("seed", 0))
    check_config(cam, csd)
    device = rank_device(select_device(require(cfg, "runtime.device")))
    amp = setup_precision(device, require(cfg, "runtime.amp"))
    ds, index = open_indexed(cfg, index_path)
    ids = split_ids(index, "train")
    labels = index["splits"]["train"]["labels"]
    masks = RoundOneMasks(masks_path, csd["source_masks"], csd["fg_threshold"], csd["bg_threshold"])
    masks.check_covers(ids)
    try:
        sampler = PasteClassSampler({i: labels[i] for i in ids}, ds.num_classes - 1, csd["cooccurrence_temperature"])
    except ValueError as exc:
        raise PipelineError(f"{index_path}: {exc}") from None
    if is_main():
        missing = [ds.class_names[c] for c, pool in sampler.by_class.items() if not pool]
        log.info("%d source images (single-label) for %d targets; classes without a source: %s",
                 sum(map(len, sampler.by_class.values())), len(ids), missing or "none")

    torch.manual_seed(seed)  # the baseline's initial weights, on every rank
    net = build_cam_net(cam, ds.num_classes).to(device)
    max_iters = iterations(len(ids), cam, world)
    start_iter = csd["start_epoch"] * (max_iters // cam["epochs"])
    opt, sched = build_sgd(net, cam, max_iters)
    model = wrap_ddp(LogitsAndCams(net), device)
    data = ResumableLoader(CAMTrainDataset(ds, ids, labels, cam["crop_size"], cam["resize_long"]),
                           cam["batch_size"], seed=seed, num_workers=cam["num_workers"])
    pairs = ResumableLoader(PastePairDataset(ds, ids, labels, masks, sampler, csd["crop_size"], csd["resize_long"],
                                             csd["source_background"]),
                            csd["paste_batch"], seed=seed + PASTE_SEED_OFFSET, num_workers=csd["num_workers"])
    model.train()

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

    state = TrainState(model, opt, sched, data=data, extra={"pairs": pairs}, config=cfg,
                       code=stage_code_hash("pipeline.train_csd"))
    run_loop(step, state, TrainLoopConfig(max_iters, cam["ckpt_every"], Path(ckpt_dir), Path(metrics),
                                          seed=seed, desc="train_csd"))
    if is_main():
        save_final(out, net.state_dict(), {"cam": cam, "csd": csd, "num_classes": ds.num_classes,
                                           "class_names": ds.class_names, "iterations": max_iters})
        log.info("wrote %s after %d iterations", out, max_iters)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--source-masks", required=True,
                   help="round-1 masks: the baseline's cams.h5 (csd.source_masks=cam_seeds) or CRF masks h5")
    p.add_argument("--out", required=True, help="final model (rule output)")
    p.add_argument("--ckpt-dir", required=True, help="intermediate checkpoints (outside the DAG)")
    p.add_argument("--metrics", required=True, help="per-iteration metrics CSV")
    args, cfg = parse(p, argv)
    run_gpu_job(_train, args.gpus, cfg, args.index, args.source_masks, args.out, args.ckpt_dir, args.metrics)


if __name__ == "__main__":
    main()
