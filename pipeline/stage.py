"""What every stage entry point shares: parsing, the dataset + index, and the GPU job wrapper."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import parse_cfg, require, setup_logging, stage_parser
from pipeline.data import SegDataset, open_dataset
from pipeline.index_dataset import load_index

log = logging.getLogger("pipeline")


def gpu_stage_parser(description: str) -> argparse.ArgumentParser:
    p = stage_parser(description)
    p.add_argument("--index", required=True, help="results/dataset/index.json")
    p.add_argument("--gpus", type=int, default=1, help="the rule's `gpu` resource: >1 runs DDP")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    args = p.parse_args(argv)
    setup_logging()
    if getattr(args, "threads", 0):
        import torch  # not at module level: CPU-only stages (CRF workers) import this module

        torch.set_num_threads(args.threads)
    return args, parse_cfg(args.cfg)


def open_indexed(cfg: dict, index_path: str | Path) -> tuple[SegDataset, dict]:
    """The dataset reader with the index's label cache installed, and the index itself."""
    ds = open_dataset(require(cfg, "dataset"))
    index = load_index(index_path)
    for split in index["splits"].values():
        ds.set_label_cache(split["labels"])
    return ds, index


def split_ids(index: dict, *roles: str) -> list[str]:
    """Ids of the given split roles (train/eval/val/...), de-duplicated in order."""
    seen: dict[str, None] = {}
    for role in roles:
        if role in index["splits"]:
            seen.update(dict.fromkeys(index["splits"][role]["ids"]))
    return list(seen)


def run_gpu_job(fn: Callable[..., Any], gpus: int, *args: Any) -> None:
    """Lease `gpus` physical GPUs (no-op on CPU / under SLURM) and run `fn(rank, world, *args)`,
    on `gpus` DDP processes when more than one is asked for."""
    from pipeline.runtime import GpuLease, launch

    with GpuLease(max(gpus, 0)):
        launch(fn, max(gpus, 1), *args)
