"""The one iteration-based training loop every training stage runs (CAM, CSD, SeCo, DeepLab).

A stage builds its model/optimizer/data, then hands a `step_fn(it) -> logs` to `run_loop`,
which owns resume, checkpoints, progress output and the metrics CSV, so those exist once:

    state = TrainState(model, optimizer, scheduler, data=ResumableLoader(ds, bs, seed))
    run_loop(step, state, TrainLoopConfig(max_iters, ckpt_every, ckpt_dir, metrics_csv, seed=seed))
    if is_main():
        save_final(output_path, unwrap(model).state_dict(), meta)

Iterations are 0-based: `step_fn(it)` runs for it = 0 .. max_iters-1. A checkpoint records the
last completed iteration; a restart continues at the next one with model, optimizer, scheduler,
data position, extra objects and all RNG states restored, so on CPU with a fixed seed the
finished run is bit-identical to one that was never interrupted.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.runtime import distributed
from pipeline.runtime.checkpoint import load_latest, save_checkpoint
from pipeline.runtime.device import peak_memory_gib, reset_peak_memory
from pipeline.runtime.rng import capture_rng_state, restore_rng_state, seed_everything

log = logging.getLogger(__name__)

_RESERVED_EXTRA = ("data", "_trainer")
# Written into the checkpoint folder once the final model exists (`mark_complete`).
COMPLETE = "complete"
# Metrics CSV column (CUDA runs only): peak tensor memory of the loop so far, GiB.
PEAK_MEM_KEY = "peak_mem_gib"


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> Any: ...


@dataclass
class TrainLoopConfig:
    max_iters: int
    ckpt_every: int
    ckpt_dir: Path
    metrics_csv: Path
    log_every: int = 10
    seed: int = 0
    desc: str = "train"


@dataclass
class TrainState:
    """Everything a checkpoint must capture. `data` is typically a `ResumableLoader`; `extra`
    holds other stateful objects (EMA teacher, prototype bank, ...) by a stable name.
    `config` (the resolved config dict) and `code` (the stage's code hash,
    `pipeline.provenance.stage_code_hash`) are stored in checkpoints and compared on resume."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any | None = None
    data: Stateful | None = None
    extra: dict[str, Stateful] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    code: str | None = None
    iteration: int = -1  # last completed iteration, maintained by run_loop


def _canonical(config: Any) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _restore(state: TrainState, ckpt: dict[str, Any], world: int, rank: int) -> None:
    distributed.unwrap(state.model).load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scheduler is not None and ckpt.get("scheduler") is not None:
        state.scheduler.load_state_dict(ckpt["scheduler"])
    extra = ckpt.get("extra") or {}
    if state.data is not None and "data" in extra:
        state.data.load_state_dict(extra["data"])
    for name, obj in state.extra.items():
        if name not in extra:
            raise PipelineError(
                f"{ckpt['path']}: checkpoint has no state for {name!r}; delete it to start over"
            )
        obj.load_state_dict(extra[name])
    # RNGs last, so nothing above can consume random numbers after the restore.
    rng_ranks = (extra.get("_trainer") or {}).get("rng_ranks")
    if world > 1 and rng_ranks is not None and len(rng_ranks) == world:
        restore_rng_state(rng_ranks[rank])
    else:
        restore_rng_state(ckpt["rng"])


def run_loop(step_fn: Callable[[int], Mapping[str, float]], state: TrainState, cfg: TrainLoopConfig) -> None:
    """Run iterations from the last checkpoint (or 0) to `cfg.max_iters`, checkpointing every
    `cfg.ckpt_every` iterations and at the end. Collective-safe: call it on every rank."""
    if cfg.max_iters < 1:
        raise PipelineError(f"max_iters: must be >= 1, got {cfg.max_iters}")
    if cfg.ckpt_every < 1:
        raise PipelineError(f"ckpt_every: must be >= 1, got {cfg.ckpt_every}")
    for name in state.extra:
        if name in _RESERVED_EXTRA:
            raise ValueError(f"TrainState.extra name {name!r} is reserved")
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0

    start, elapsed0 = 0, 0.0
    ckpt = load_latest(cfg.ckpt_dir)
    complete = Path(cfg.ckpt_dir) / COMPLETE
    if ckpt is not None and complete.exists():
        # The folder's last run finished (its final model was written): this is a forced rerun
        # or a rerun after a change, never an interruption, so it trains again from scratch.
        if main:
            log.info("%s: the previous run in this folder finished; training from scratch", cfg.ckpt_dir)
        ckpt = None
    if ckpt is not None:
        ckpt_world = (ckpt["extra"].get("_trainer") or {}).get("world_size", 1)
        if ckpt_world != world:
            if main:
                log.warning("%s was written by %d process(es) but this run has %d: the data position cannot "
                            "be carried over, starting from scratch", ckpt["path"], ckpt_world, world)
            ckpt = None
    if (
        ckpt is not None
        and state.config is not None
        and ckpt.get("config") is not None
        and _canonical(ckpt["config"]) != _canonical(state.config)
    ):
        # Snakemake reruns a rule whose params changed; continuing a run made with another
        # config would silently mix the two, so the stale checkpoint is ignored (and replaced).
        log.warning("%s was written with a different config: starting from scratch", ckpt["path"])
        ckpt = None
    if ckpt is not None and state.code is not None and (ckpt["extra"].get("_trainer") or {}).get("code") != state.code:
        # The same for a code change (Snakemake's `code` param): the final checkpoint of the old
        # code would otherwise "resume" at its last iteration and return the old weights.
        log.warning("%s was written by other code: starting from scratch", ckpt["path"])
        ckpt = None
    if ckpt is not None:
        _restore(state, ckpt, world, rank)
        start = int(ckpt["iteration"]) + 1
        elapsed0 = float((ckpt["extra"].get("_trainer") or {}).get("elapsed", 0.0))
        if main:
            log.info("resumed from %s at iteration %d/%d", ckpt["path"], start, cfg.max_iters)
    else:
        seed_everything(cfg.seed + rank)
    state.iteration = start - 1
    del ckpt  # can be large; do not keep it alive for the whole run
    if main:
        complete.unlink(missing_ok=True)

    metrics = _MetricsCSV(cfg.metrics_csv, keep_upto=start - 1) if main else None
    progress = _Progress(cfg, start) if main else None
    # CPU runs get no memory column, so their metrics stay exactly as they were.
    device = _param_device(state.model)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    try:
        for it in range(start, cfg.max_iters):
            # The lr this step uses (schedulers step after the optimizer, inside step_fn).
            lr = float(state.optimizer.param_groups[0]["lr"])
            logs = {k: float(v) for k, v in step_fn(it).items()}
            lr = logs.pop("lr", lr)
            peak = peak_memory_gib(device)
            if peak is not None:
                logs[PEAK_MEM_KEY] = peak
            state.iteration = it
            elapsed = elapsed0 + time.perf_counter() - t0
            if metrics is not None and progress is not None:
                metrics.append(it, logs, lr, elapsed)
                progress.update(it, logs, lr)
            if (it + 1) % cfg.ckpt_every == 0 or it + 1 == cfg.max_iters:
                _checkpoint(state, cfg, it, elapsed, world)
    finally:
        if metrics is not None:
            metrics.close()
        if progress is not None:
            progress.close()
    peak = peak_memory_gib(device)
    if main and peak is not None:
        log.info("%s: peak %s memory %.2f GiB (tensors)", cfg.desc, device, peak)


def _param_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


def _checkpoint(state: TrainState, cfg: TrainLoopConfig, it: int, elapsed: float, world: int) -> None:
    # Every rank's RNG differs (seed + rank); gathering is a collective, so all ranks take part.
    rng_ranks = distributed.all_gather_objects(capture_rng_state()) if world > 1 else None
    if not distributed.is_main():
        return
    extra: dict[str, Any] = {name: obj.state_dict() for name, obj in state.extra.items()}
    if state.data is not None:
        extra["data"] = state.data.state_dict()
    extra["_trainer"] = {"elapsed": elapsed, "world_size": world, "rng_ranks": rng_ranks, "code": state.code}
    save_checkpoint(
        cfg.ckpt_dir,
        model=state.model,
        optimizer=state.optimizer,
        scheduler=state.scheduler,
        iteration=it,
        config=state.config,
        extra=extra,
        rng=rng_ranks[0] if rng_ranks else None,
    )


class _MetricsCSV:
    """iteration, <log keys...>, lr, seconds — one row per iteration, flushed at once so rows
    survive a kill; on resume rows after the checkpoint are dropped (they will be redone)."""

    def __init__(self, path: Path, keep_upto: int) -> None:
        self.path = Path(path)
        self.keys: list[str] = []
        rows: list[dict[str, str]] = []
        if keep_upto >= 0 and self.path.exists():
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.keys = [k for k in reader.fieldnames or [] if k not in ("iteration", "lr", "seconds")]
                for row in reader:
                    try:
                        if int(row["iteration"]) <= keep_upto:
                            rows.append(row)
                    except (TypeError, ValueError):
                        continue  # a line cut short by a kill
        self._rewrite(rows)

    @property
    def header(self) -> list[str]:
        return ["iteration", *self.keys, "lr", "seconds"]

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.header, restval="")
                writer.writeheader()
                writer.writerows(rows)
        self._fh = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.DictWriter(self._fh, fieldnames=self.header, restval="")

    def append(self, it: int, logs: dict[str, float], lr: float, seconds: float) -> None:
        new = [k for k in logs if k not in self.keys]
        if new:  # a loss term that appears late (e.g. after warm-up): widen the file once
            self._fh.close()
            with open(self.path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            self.keys.extend(new)
            self._rewrite(rows)
        self._writer.writerow(
            {
                "iteration": it,
                **{k: f"{v:.6g}" for k, v in logs.items()},
                "lr": f"{lr:.6g}",
                "seconds": f"{seconds:.3f}",
            }
        )
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _fmt(logs: dict[str, float], lr: float) -> dict[str, str]:
    return {**{k: f"{v:.4g}" for k, v in logs.items()}, "lr": f"{lr:.3g}"}


class _Progress:
    """tqdm on a terminal; in a log file (stderr not a TTY) a plain line every `log_every`
    iterations instead, because carriage-return redraws turn log files into one huge line."""

    def __init__(self, cfg: TrainLoopConfig, start: int) -> None:
        self.cfg = cfg
        self.tty = sys.stderr.isatty() and not os.environ.get("WSSS_PLAIN_PROGRESS")
        self.bar = (
            tqdm(total=cfg.max_iters, initial=start, desc=cfg.desc, dynamic_ncols=True) if self.tty else None
        )
        self.last_t = time.perf_counter()
        self.last_it = start - 1

    def update(self, it: int, logs: dict[str, float], lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(_fmt(logs, lr), refresh=False)
            self.bar.update(1)
            return
        done = it + 1
        if done % self.cfg.log_every and done != self.cfg.max_iters:
            return
        now = time.perf_counter()
        rate = (it - self.last_it) / max(now - self.last_t, 1e-9)
        self.last_t, self.last_it = now, it
        eta = (self.cfg.max_iters - done) / rate if rate > 0 else math.inf
        eta_s = str(datetime.timedelta(seconds=int(eta))) if math.isfinite(eta) else "?"
        fields = " ".join(f"{k}={v}" for k, v in _fmt(logs, lr).items())
        print(
            f"{self.cfg.desc} {done}/{self.cfg.max_iters} {fields} {rate:.2f}it/s eta {eta_s}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def mark_complete(ckpt_dir: str | os.PathLike) -> None:
    """Record that the run in `ckpt_dir` finished: the next run there starts from scratch
    instead of "resuming" at the final iteration (a forced rerun must retrain)."""
    write_text_atomic(Path(ckpt_dir) / COMPLETE, "the final model of this run was written\n")
