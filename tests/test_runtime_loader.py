"""ResumableLoader: rank sharding, exact resume, independence from num_workers."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from pipeline.errors import PipelineError
from pipeline.runtime.loader import ResumableLoader


class _Augmented(Dataset):
    """Index plus random "augmentation" from all three global RNGs."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, index: int) -> torch.Tensor:
        import numpy as np

        return torch.tensor([float(index), random.random(), float(np.random.rand()), torch.rand(()).item()])


def _take(loader: ResumableLoader, n: int) -> list[torch.Tensor]:
    return [next(loader) for _ in range(n)]


def test_ranks_get_disjoint_equal_shards() -> None:
    shards = [ResumableLoader(_Augmented(), 2, seed=3, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 2  # 11 // 2 = 5 per rank -> 2 full batches
    for epoch in range(3):
        a = [i for b in shards[0].epoch_batches(epoch) for i in b]
        b = [i for b in shards[1].epoch_batches(epoch) for i in b]
        assert not set(a) & set(b)
    # the permutation changes with the epoch
    assert shards[0].epoch_batches(0) != shards[0].epoch_batches(1)


def test_resume_continues_with_identical_batches() -> None:
    ref = ResumableLoader(_Augmented(), 3, seed=7)  # 3 batches per epoch
    head = _take(ref, 4)  # crosses an epoch boundary
    state = ref.state_dict()
    assert (state["epoch"], state["position"]) == (1, 1)
    tail = _take(ref, 5)

    torch.manual_seed(999)  # the training process's own RNG must not matter
    resumed = ResumableLoader(_Augmented(), 3, seed=7)
    resumed.load_state_dict(state)
    for a, b in zip(tail, _take(resumed, 5), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(head[0], tail[2])  # a new epoch draws new augmentations


def test_loading_does_not_touch_training_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _take(ResumableLoader(_Augmented(), 2, seed=1), 3)
    assert torch.equal(torch.rand(3), expected)


def test_workers_give_the_same_batches() -> None:
    plain = _take(ResumableLoader(_Augmented(), 2, seed=5), 7)
    workers = ResumableLoader(_Augmented(), 2, seed=5, num_workers=1)
    for a, b in zip(plain, _take(workers, 7), strict=True):
        assert torch.equal(a, b)


def test_mismatched_state_and_tiny_dataset_are_errors() -> None:
    loader = ResumableLoader(_Augmented(), 2, seed=5)
    state = loader.state_dict() | {"world_size": 2}
    with pytest.raises(PipelineError, match="world_size"):
        loader.load_state_dict(state)
    with pytest.raises(PipelineError, match="batch_size"):
        ResumableLoader(_Augmented(), 6, rank=0, world_size=2)
