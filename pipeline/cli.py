"""What every stage entry point shares: its command line (the config slice as JSON, `--cfg`, plus
file paths), logging, the dataset + index, and the GPU job wrapper.

Snakemake passes only the config sections a stage reads, through `params:`, so editing an
unrelated config key does not rerun the stage (Snakemake's params trigger).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.data import SegDataset, open_dataset
from pipeline.data.index import load_index
from pipeline.errors import PipelineError


def stage_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", required=True, help="JSON object with the config sections this stage reads")
    return p


def parse_cfg(text: str) -> dict:
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"--cfg is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise PipelineError("--cfg must be a JSON object")
    return cfg


def require(cfg: dict, dotted: str):
    """Fetch `a.b.c` from cfg, failing with the config key's name."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PipelineError(f"config key {dotted}: missing")
        node = node[part]
    return node


def setup_logging(argv: Sequence[str] | None = None) -> logging.Logger:
    """Log lines to stderr; a first line on stdout (the rule's log gets both streams) names the
    stage, process and host of this attempt. Stdout, so that stderr keeps one clear line on bad
    input."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr, force=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"=== attempt: {Path(sys.argv[0]).stem}, pid {os.getpid()} on {socket.gethostname()} at {started}",
          flush=True)
    return logging.getLogger("pipeline")


def gpu_stage_parser(description: str, index: bool = True) -> argparse.ArgumentParser:
    p = stage_parser(description)
    if index:
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
    from pipeline.runtime.distributed import launch
    from pipeline.runtime.lease import GpuLease, wait_limit

    with GpuLease(max(gpus, 0), timeout=wait_limit()):
        launch(fn, max(gpus, 1), *args)
