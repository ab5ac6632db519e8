"""Stage: train DeepLab on a method's refined pseudo masks, or on GT masks (method `gt`, the ceiling).

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
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipeline.config import require
from pipeline.data.base import IGNORE_INDEX, SegDataset
from pipeline.data.transforms import hflip, normalize, random_crop, resize, to_chw
from pipeline.errors import PipelineError, cli_entry
from pipeline.io.h5store import ArtifactReader
from pipeline.models.deeplab import MSC, DeepLab, build_deeplab
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

log = logging.getLogger("pipeline.train_deeplab")

GT_METHOD = "gt"


class MaskSource:
    """Training masks of one method: the refined pseudo masks file, or the dataset's GT (`gt`)."""

    def __init__(self, ds: SegDataset, method: str, masks_path: str | None) -> None:
        if method != GT_METHOD and not masks_path:
            raise PipelineError(f"train_deeplab: method {method!r} needs --masks (its pseudo masks)")
        self.ds, self.method = ds, method
        self.reader = ArtifactReader(masks_path, expect="mask") if method != GT_METHOD else None

    def __call__(self, image_id: str) -> np.ndarray:
        if self.reader is not None:
            return self.reader.mask(image_id)
        mask = self.ds.mask(image_id)
        if mask is None:
            raise PipelineError(f"training image {image_id!r} has no ground-truth mask for the {GT_METHOD} ceiling")
        return mask


class SegTrainDataset(Dataset):
    """kazuto's augmentation: scale drawn from `scales`, flip, normalise, crop (image pad 0 = the
    mean after normalisation, label pad 255). numpy's global RNG is seeded per draw by
    `ResumableLoader`, so a resumed run reproduces the same crops."""

    def __init__(self, ds: SegDataset, ids: list[str], masks: Callable[[str], np.ndarray], crop: int,
                 scales: list[float]) -> None:
        self.ds, self.ids, self.masks, self.crop, self.scales = ds, ids, masks, crop, list(scales)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(np.random.randint(0, 2**31))
        image_id = self.ids[i]
        img, mask = self.ds.image(image_id), self.masks(image_id)
        if mask.shape != img.shape[:2]:
            raise PipelineError(f"mask of {image_id!r} is {mask.shape}, its image {img.shape[:2]}")
        s = float(self.scales[int(rng.integers(len(self.scales)))])
        size = (max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s)))
        img, mask = resize(img, size), resize(mask, size, nearest=True)
        if rng.random() < 0.5:
            img, mask = hflip(img), hflip(mask)
        img, mask, _ = random_crop(normalize(img), self.crop, rng, mask=mask, pad_value=0.0, mask_pad=IGNORE_INDEX)
        return {"image": torch.from_numpy(to_chw(img)), "mask": torch.from_numpy(mask.astype(np.int64)), "index": i}


def seg_loss(logits: torch.Tensor, mask: torch.Tensor, loss_at: str) -> torch.Tensor:
    """Cross-entropy ignoring 255. kazuto shrinks the labels to the logits (nearest);
    `input` upsamples the logits to the labels instead."""
    if loss_at == "logits":
        target = F.interpolate(mask[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    up = F.interpolate(logits, size=mask.shape[1:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, mask, ignore_index=IGNORE_INDEX)


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


def _train(rank: int, world: int, cfg: dict, index_path: str, method: str, masks_path: str | None, out: str,
           ckpt_dir: str, metrics: str, threads: int = 0) -> None:
    if threads:  # DDP ranks are fresh processes: apply --threads to each of them
        torch.set_num_threads(threads)
    dl, seed = require(cfg, "deeplab"), int(cfg.get("seed", 0))
    device = rank_device(select_device(require(cfg, "runtime.device")))
    amp = setup_precision(device, require(cfg, "runtime.amp"))
    ds, index = open_indexed(cfg, index_path)
    ids = split_ids(index, "train")
    torch.manual_seed(seed)  # identical initial weights on every rank, and for every method
    net = build_deeplab(dl, ds.num_classes, pretrained=dl.get("pretrained")).to(device)
    max_iters, iter_size = int(dl["iterations"]), int(dl["iter_size"])
    opt, sched = build_optimizer(net, dl, max_iters)
    model = wrap_ddp(MSC(net, dl["msc_scales"]), device)
    dataset = SegTrainDataset(ds, ids, MaskSource(ds, method, masks_path), dl["crop_size"], dl["train_scales"])
    data = ResumableLoader(dataset, dl["batch_size"], seed=seed, num_workers=dl["num_workers"])
    model.train()

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
                loss = sum(seg_loss(o.float(), y, dl["loss_at"]) for o in outs) / iter_size
                loss.backward()
            total += loss.item()
        opt.step()
        sched.step()
        return {"loss": total}

    # `method` is part of the resume key: a checkpoint of another method's run is never continued.
    state = TrainState(model, opt, sched, data=data, config={**cfg, "method": method, "masks": masks_path},
                       code=stage_code_hash("pipeline.train_deeplab"))
    run_loop(step, state, TrainLoopConfig(max_iters, dl["ckpt_every"], Path(ckpt_dir), Path(metrics),
                                          seed=seed, desc=f"train_deeplab[{method}]"))
    if is_main():
        save_final(out, unwrap(model).base.state_dict(),
                   {"deeplab": dl, "method": method, "num_classes": ds.num_classes, "class_names": ds.class_names,
                    "iterations": max_iters, "stride": net.stride})
        log.info("wrote %s after %d iterations", out, max_iters)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--method", required=True, help=f"the method whose masks to train on; {GT_METHOD!r} = GT ceiling")
    p.add_argument("--masks", default=None, help="refined pseudo masks (crf.h5); not for the GT ceiling")
    p.add_argument("--out", required=True, help="final model (rule output)")
    p.add_argument("--ckpt-dir", required=True, help="intermediate checkpoints (outside the DAG)")
    p.add_argument("--metrics", required=True, help="per-iteration metrics CSV")
    args, cfg = parse(p, argv)
    if args.method == GT_METHOD and args.masks:
        raise PipelineError(f"train_deeplab: the {GT_METHOD!r} ceiling trains on GT masks; drop --masks")
    run_gpu_job(_train, args.gpus, cfg, args.index, args.method, args.masks, args.out, args.ckpt_dir, args.metrics,
                args.threads)


if __name__ == "__main__":
    main()
