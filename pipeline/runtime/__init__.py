"""GPU job runtime shared by every training and inference stage.

    lease        GpuLease: distinct physical GPUs per concurrent Snakemake job (flock based)
    device       select_device, setup_precision, autocast   (runtime.device, runtime.amp);
                 reset_peak_memory, peak_memory_gib (peak CUDA memory of a loop)
    distributed  launch + DDP helpers (batch size is per process; lr is never rescaled)
    loader       ResumableLoader: endless, seeded, rank-sharded, resumable batches
    checkpoint   save_checkpoint / load_latest (resume) and save_final / load_final (outputs)
    trainer      run_loop: resume, checkpoints, progress, metrics CSV, in one place
    rng          seed_everything and RNG state capture/restore

Names are imported lazily: a stage must take its GpuLease before CUDA is touched, and
`pipeline.runtime.lease` itself is importable without torch so the lease costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "GpuLease": "lease",
    "resolve_pool": "lease",
    "lock_holders": "lease",
    "select_device": "device",
    "setup_precision": "device",
    "autocast": "device",
    "reset_peak_memory": "device",
    "peak_memory_gib": "device",
    "launch": "distributed",
    "is_distributed": "distributed",
    "is_main": "distributed",
    "rank": "distributed",
    "world_size": "distributed",
    "barrier": "distributed",
    "all_reduce_mean": "distributed",
    "all_gather_objects": "distributed",
    "rank_device": "distributed",
    "wrap_ddp": "distributed",
    "unwrap": "distributed",
    "shard_indices": "distributed",
    "ResumableLoader": "loader",
    "save_checkpoint": "checkpoint",
    "load_latest": "checkpoint",
    "save_final": "checkpoint",
    "load_final": "checkpoint",
    "TrainLoopConfig": "trainer",
    "TrainState": "trainer",
    "run_loop": "trainer",
    "seed_everything": "rng",
    "capture_rng_state": "rng",
    "restore_rng_state": "rng",
}

__all__ = [
    "GpuLease",
    "resolve_pool",
    "lock_holders",
    "select_device",
    "setup_precision",
    "autocast",
    "reset_peak_memory",
    "peak_memory_gib",
    "launch",
    "is_distributed",
    "is_main",
    "rank",
    "world_size",
    "barrier",
    "all_reduce_mean",
    "all_gather_objects",
    "rank_device",
    "wrap_ddp",
    "unwrap",
    "shard_indices",
    "ResumableLoader",
    "save_checkpoint",
    "load_latest",
    "save_final",
    "load_final",
    "TrainLoopConfig",
    "TrainState",
    "run_loop",
    "seed_everything",
    "capture_rng_state",
    "restore_rng_state",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from pipeline.runtime.checkpoint import load_final, load_latest, save_checkpoint, save_final
    from pipeline.runtime.device import (
        autocast,
        peak_memory_gib,
        reset_peak_memory,
        select_device,
        setup_precision,
    )
    from pipeline.runtime.distributed import (
        all_gather_objects,
        all_reduce_mean,
        barrier,
        is_distributed,
        is_main,
        launch,
        rank,
        rank_device,
        shard_indices,
        unwrap,
        world_size,
        wrap_ddp,
    )
    from pipeline.runtime.lease import GpuLease, lock_holders, resolve_pool
    from pipeline.runtime.loader import ResumableLoader
    from pipeline.runtime.rng import capture_rng_state, restore_rng_state, seed_everything
    from pipeline.runtime.trainer import TrainLoopConfig, TrainState, run_loop
