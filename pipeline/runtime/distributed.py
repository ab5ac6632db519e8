"""Multi-GPU training with DistributedDataParallel, one process per leased GPU.

A rule that asks for `gpu=N` (N > 1) leases N GPUs (see `lease.py`, which narrows
CUDA_VISIBLE_DEVICES to them) and calls `launch(train_fn, N, ...)`; rank r then uses `cuda:r`.

Batch size and learning rate semantics (read this before changing a config):
  * `batch_size` in the config is PER PROCESS, as in the official SeCo/IRN code (batch 4 per
    GPU). The effective batch of one optimisation step is `batch_size * world_size`.
  * The learning rate is NOT rescaled with the world size: the configured value is used as is.
    Going from 1 to 4 GPUs with the same config therefore quadruples the effective batch at
    the same learning rate; adjust `lr` in the config yourself if you want linear scaling.
  * DDP averages gradients over ranks, so each rank's loss should be a mean over its own batch.
  * Each rank seeds its global RNGs with `seed + rank` (augmentations differ between ranks);
    data ORDER comes from `ResumableLoader`, which shares one permutation per epoch (seeded with
    `seed + epoch`) and gives each rank a disjoint shard of it.
  * Only rank 0 writes checkpoints, metrics and final outputs.

world_size 1 runs in-process without a process group, so every helper here is also valid (and a
no-op where that makes sense) in an ordinary single-GPU or CPU run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.errors import PipelineError

MASTER_ADDR = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free a moment ago (the tiny race before rank 0 binds it is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((MASTER_ADDR, 0))
        return int(sock.getsockname()[1])


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(fn: Callable[..., Any], world_size: int, *args: Any, backend: str | None = None) -> Any:
    """Run `fn(rank, world_size, *args)` on `world_size` processes joined in a process group.

    `fn` must be picklable (a module-level function): the workers are started with "spawn",
    because forking a process that may have touched CUDA is unsafe. With world_size 1, `fn`
    runs in this process, no process group is created, and its return value is passed through.
    An exception in any rank is re-raised here.
    """
    if world_size < 1:
        raise PipelineError(f"resources.gpu: world size must be >= 1, got {world_size}")
    if world_size == 1:
        return fn(0, 1, *args)
    backend = backend or default_backend()
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise PipelineError(
            f"resources.gpu: {world_size} processes requested but only {torch.cuda.device_count()} "
            "CUDA device(s) are visible"
        )
    port = free_port()
    mp.start_processes(
        _worker,
        args=(fn, world_size, backend, port, args),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )
    return None


def _worker(rank: int, fn: Callable[..., Any], world: int, backend: str, port: int, args: tuple) -> None:
    # Also export the torchrun-style variables so third-party code that reads them behaves.
    os.environ.update(
        MASTER_ADDR=MASTER_ADDR,
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://{MASTER_ADDR}:{port}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks (a new tensor; the input is left untouched)."""
    out = tensor.detach().clone()
    if not out.is_floating_point():
        out = out.double()
    if is_distributed() and world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world_size()
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...]; [obj] when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_device(device: torch.device) -> torch.device:
    """The device this rank should use: `cuda:<rank>` under multi-GPU DDP, else `device` unchanged."""
    if device.type == "cuda" and is_distributed() and world_size() > 1:
        return torch.device("cuda", rank())
    return device


def wrap_ddp(model: nn.Module, device: torch.device, **kwargs: Any) -> nn.Module:
    """DistributedDataParallel around `model` when running distributed; `model` itself otherwise."""
    if not is_distributed() or world_size() == 1:
        return model
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return nn.parallel.DistributedDataParallel(model, device_ids=[index], **kwargs)
    return nn.parallel.DistributedDataParallel(model, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside a DDP wrapper, so checkpoints load without DDP."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Indices of `range(n)` this rank handles at inference: strided, disjoint, covering all."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} out of range for world size {world}")
    return list(range(rank, n, world))
