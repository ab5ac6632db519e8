"""An endless, resumable batch stream over a map-style dataset.

Training is iteration based, so batches come from a stream that never ends: epoch e uses the
permutation drawn from a generator seeded with `seed + e`, cut into equal disjoint shards (one
per rank), then into batches. The state is just (epoch, position = batches already handed out
in this epoch), so a resumed run sees exactly the batches the uninterrupted run would have seen.

Each sample is loaded with python/numpy/torch-CPU RNGs seeded from (seed, epoch, index), so
random augmentations are also reproducible after a resume, and identical whatever
`num_workers` is (a worker's own RNG stream would depend on what it loaded before the kill).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.errors import PipelineError
from pipeline.runtime import distributed


def item_seed(seed: int, epoch: int, index: int) -> int:
    """Well-mixed 32-bit seed for one sample draw (neighbouring indices get unrelated streams)."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, index]).generate_state(1)[0])


class _SeededItems(Dataset):
    """Loads `dataset[index]` under RNGs seeded for that (epoch, index) draw."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        # Save and restore: with num_workers=0 this runs in the training process, whose RNG
        # stream (dropout, noise) must not depend on data loading.
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        # CPU generator only: torch.manual_seed would also reseed (and perturb) CUDA RNGs.
        torch.random.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class _RemainingBatches(Sampler[list[Any]]):
    """Batch sampler of the owner's current epoch from its current position. It is re-iterated
    by every `iter(DataLoader)` (persistent workers included), always in the main process."""

    def __init__(self, owner: ResumableLoader) -> None:
        self.owner = owner

    def __len__(self) -> int:
        return self.owner.batches_per_epoch - self.owner.position

    def __iter__(self) -> Iterator[list[Any]]:
        owner = self.owner
        for batch in owner.epoch_batches(owner.epoch)[owner.position :]:
            if owner.seed_items:
                yield [(i, item_seed(owner.seed, owner.epoch, i)) for i in batch]
            else:
                yield batch


class ResumableLoader:
    """Endless iterator of batches with `state_dict()`/`load_state_dict()`.

    `batch_size` is per process. Incomplete batches at an epoch's end are dropped by default so
    every step sees the same batch size (BatchNorm). rank/world_size default to the current
    process group (see `distributed`).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        *,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        seed_items: bool = True,
        worker_init_fn: Callable[[int], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise PipelineError(f"batch_size: must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.seed_items = seed_items
        self.rank = distributed.rank() if rank is None else rank
        self.world_size = distributed.world_size() if world_size is None else world_size
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        # Equal shards keep ranks in lock-step (DDP needs the same number of steps everywhere);
        # the few samples cut off differ every epoch because the permutation changes.
        self.per_rank = self.num_samples // self.world_size
        full, rest = divmod(self.per_rank, batch_size)
        self.batches_per_epoch = full if drop_last or rest == 0 else full + 1
        if self.batches_per_epoch == 0:
            raise PipelineError(
                f"batch_size: {batch_size} per process is larger than the {self.per_rank} samples "
                f"each of {self.world_size} process(es) gets from a dataset of {self.num_samples}"
            )
        self.epoch = 0
        self.position = 0
        self._iter: Iterator[Any] | None = None
        self._loader = DataLoader(
            _SeededItems(dataset) if seed_items else dataset,
            batch_sampler=_RemainingBatches(self),
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            worker_init_fn=worker_init_fn,
            # An explicit generator: otherwise every iter(DataLoader) draws its worker base seed
            # from the global torch RNG, and a resumed run (one extra iter() call) would diverge.
            generator=torch.Generator().manual_seed(seed),
        )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All of this rank's batches (dataset indices) of `epoch`."""
        gen = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.num_samples, generator=gen)[: self.per_rank * self.world_size]
        mine = perm[self.rank :: self.world_size].tolist()
        bs = self.batch_size
        return [mine[i : i + bs] for i in range(0, len(mine), bs)][: self.batches_per_epoch]

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> ResumableLoader:
        return self

    def __next__(self) -> Any:
        if self._iter is None:
            self._iter = iter(self._loader)
        try:
            batch = next(self._iter)
        except StopIteration:
            self.epoch += 1
            self.position = 0
            self._iter = iter(self._loader)
            batch = next(self._iter)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("num_samples", "world_size", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise PipelineError(
                    f"checkpoint data position was recorded with {key}={state[key]} but this run has "
                    f"{key}={getattr(self, key)}; resume with the same setting or delete the checkpoint "
                    "directory to start over"
                )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        # Prefetched batches of an existing iterator belong to the old position.
        self._iter = None
