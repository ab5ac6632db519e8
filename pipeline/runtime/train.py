"""The one training skeleton (detectron2's TrainerBase idea): a method says how to build its model,
optimizer, data and one step; `train_main` does everything else, once, for every trainer:

    command line -> GPU lease -> (DDP ranks) -> threads per rank -> device -> precision ->
    dataset + index -> torch.manual_seed(seed) -> method.build(ctx) -> run_loop (resume,
    checkpoints, progress, metrics CSV) -> final model file on rank 0

A method module provides a module-level `build(ctx: TrainContext) -> TrainPlan` (module level
because DDP ranks are spawned and receive it by pickling). The seed is set right before `build`,
so every rank, every method and every rerun starts from the same initial weights.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require, run_gpu_job, split_ids
from pipeline.data import SegDataset
from pipeline.provenance import stage_code_hash
from pipeline.runtime.checkpoint import save_final
from pipeline.runtime.device import select_device, setup_precision
from pipeline.runtime.distributed import is_main, rank_device
from pipeline.runtime.runlock import RunLock
from pipeline.runtime.trainer import Stateful, TrainLoopConfig, TrainState, mark_complete, run_loop

log = logging.getLogger("pipeline.train")


@dataclass
class TrainContext:
    """What a method's `build` gets: the resolved config slice, where it runs, and its data."""

    cfg: dict
    rank: int
    world: int
    device: torch.device
    amp: str
    seed: int
    ds: SegDataset | None            # None for a stage without the WSSS dataset (`indexed=False`: pretrain)
    index: dict | None
    ids: list[str]                   # the training split's ids
    labels: dict[str, list[int]]     # image-level labels of the training split (from the index)
    inputs: dict[str, str | None]    # the stage's extra input files (masks, tags), by option name


@dataclass
class TrainPlan:
    """What a method's `build` returns. `model` is what the step calls (DDP-wrapped where the
    method wants it); `weights()` is the state dict written as the final model file."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: Stateful
    step: Callable[[int], Mapping[str, float]]
    max_iters: int
    ckpt_every: int
    weights: Callable[[], dict]
    meta: dict
    extra: dict[str, Stateful] = field(default_factory=dict)
    # Added to the config stored in checkpoints: a checkpoint of another run is never resumed.
    resume_key: dict = field(default_factory=dict)
    desc: str | None = None
    # Writes the final model file instead of `save_final` (rank 0): save(out, weights, meta). The
    # pretrain stage writes a plain timm state dict that `pretrained: <file>` loads.
    save: Callable[[str, dict, dict], None] | None = None


Build = Callable[[TrainContext], TrainPlan]


def _run(rank: int, world: int, build: Build, stage: str, cfg: dict, index_path: str,
         inputs: dict[str, str | None], out: str, ckpt_dir: str, metrics: str, threads: int) -> None:
    if threads:  # DDP ranks are fresh processes: the thread count must be applied in each
        torch.set_num_threads(threads)
    seed = int(cfg.get("seed", 0))
    device = rank_device(select_device(require(cfg, "runtime.device")))
    amp = setup_precision(device, require(cfg, "runtime.amp"))
    if index_path is None:  # a stage that reads its own data (inputs), not the WSSS dataset
        ds, index, ids, labels = None, None, [], {}
    else:
        ds, index = open_indexed(cfg, index_path)
        ids, labels = split_ids(index, "train"), index["splits"]["train"]["labels"]
    ctx = TrainContext(cfg, rank, world, device, amp, seed, ds, index, ids, labels, inputs)
    torch.manual_seed(seed)  # identical initial weights on every rank, for every method
    plan = build(ctx)
    plan.model.train()
    desc = plan.desc or stage
    state = TrainState(plan.model, plan.optimizer, plan.scheduler, data=plan.data, extra=plan.extra,
                       config={**cfg, **plan.resume_key}, code=stage_code_hash(f"pipeline.stages.{stage}"))
    run_loop(plan.step, state, TrainLoopConfig(plan.max_iters, plan.ckpt_every, Path(ckpt_dir), Path(metrics),
                                               seed=seed, desc=desc))
    if is_main():
        meta = {**plan.meta, "iterations": plan.max_iters}
        if ds is not None:
            meta.update(num_classes=ds.num_classes, class_names=ds.class_names)
        (plan.save or save_final)(out, plan.weights(), meta)
        mark_complete(ckpt_dir)
        log.info("wrote %s after %d iterations", out, plan.max_iters)


def train_parser(description: str | None, inputs: Mapping[str, str], indexed: bool = True) -> argparse.ArgumentParser:
    """A training stage's command line: the GPU stage options, the run's files, and `inputs`
    (option name -> help) for its extra input files. `indexed=False`: no --index (no WSSS data)."""
    p = gpu_stage_parser(description or "", index=indexed)
    for name, text in inputs.items():
        p.add_argument(f"--{name.replace('_', '-')}", default=None, help=text)
    p.add_argument("--out", required=True, help="final model (rule output)")
    p.add_argument("--ckpt-dir", required=True, help="intermediate checkpoints (outside the DAG)")
    p.add_argument("--metrics", required=True, help="per-iteration metrics CSV")
    return p


def train_main(stage: str, build: Build, argv: list[str] | None, description: str | None,
               inputs: Mapping[str, str] | None = None,
               check: Callable[[dict, dict[str, str | None], int], None] | None = None,
               indexed: bool = True) -> None:
    """Entry point of a training stage `pipeline.stages.<stage>`. `check(cfg, inputs, world)`
    runs before any GPU is leased, for what only the command line can tell (file options).
    `indexed=False`: the stage trains on its own data (named by `inputs`), without the WSSS index."""
    inputs = dict(inputs or {})
    args, cfg = parse(train_parser(description, inputs, indexed), argv)
    files = {name: getattr(args, name) for name in inputs}
    if check is not None:
        check(cfg, files, max(args.gpus, 1))
    with RunLock(args.ckpt_dir):  # one writer per run folder (an orphaned job would be a second)
        run_gpu_job(_run, args.gpus, build, stage, cfg, getattr(args, "index", None), files, args.out, args.ckpt_dir,
                    args.metrics,
                    args.threads)
