"""launch() with gloo on CPU: gradients really are averaged across ranks."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.runtime import distributed as D

STEPS = 3


def _data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(8, 4, generator=gen), torch.randn(8, 2, generator=gen)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _fresh_model(rank: int) -> nn.Module:
    torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's weights
    return nn.Linear(4, 2)


def _worker(rank: int, world: int, out_dir: Path) -> None:
    assert D.rank() == rank and D.world_size() == world and D.is_main() == (rank == 0)
    mean = D.all_reduce_mean(torch.tensor([float(rank)]))
    assert mean.item() == (world - 1) / 2
    assert D.all_gather_objects(rank) == list(range(world))
    model = D.wrap_ddp(_fresh_model(rank), torch.device("cpu"))
    assert isinstance(model, nn.parallel.DistributedDataParallel) == (world > 1)
    _train(model, *_data(rank))
    D.barrier()
    torch.save(D.unwrap(model).state_dict(), out_dir / f"w{world}_rank{rank}.pt")


def test_two_ranks_average_gradients(tmp_path: Path) -> None:
    D.launch(_worker, 2, tmp_path)
    r0 = torch.load(tmp_path / "w2_rank0.pt")
    r1 = torch.load(tmp_path / "w2_rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k

    # Single process on rank 0's data alone ends elsewhere...
    D.launch(_worker, 1, tmp_path)
    alone = torch.load(tmp_path / "w1_rank0.pt")
    assert not torch.equal(alone["weight"], r0["weight"])

    # ...while one process on both ranks' data (mean loss = mean of the rank means) matches.
    both = _fresh_model(0)
    x0, y0 = _data(0)
    x1, y1 = _data(1)
    _train(both, torch.cat([x0, x1]), torch.cat([y0, y1]))
    for k, v in both.state_dict().items():
        torch.testing.assert_close(v, r0[k])


def test_shard_indices_cover_everything_once() -> None:
    shards = [D.shard_indices(10, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))
    assert D.shard_indices(10, 0, 1) == list(range(10))


def _loop_worker(rank: int, world: int, out_dir: Path, max_iters: int) -> None:
    from torch.utils.data import TensorDataset

    from pipeline.runtime.loader import ResumableLoader
    from pipeline.runtime.trainer import TrainLoopConfig, TrainState, run_loop

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    data = ResumableLoader(
        TensorDataset(torch.randn(20, 4, generator=gen), torch.randn(20, 2, generator=gen)), 3
    )
    model = D.wrap_ddp(nn.Sequential(nn.Dropout(0.3), nn.Linear(4, 2)), torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(it: int) -> dict[str, float]:
        x, y = next(data)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    cfg = TrainLoopConfig(
        max_iters=max_iters,
        ckpt_every=2,
        ckpt_dir=out_dir / "ckpt",
        metrics_csv=out_dir / "metrics.csv",
        seed=1,
    )
    run_loop(step, TrainState(model, opt, data=data), cfg)
    torch.save(D.unwrap(model).state_dict(), out_dir / f"rank{rank}.pt")


def test_run_loop_resumes_under_ddp(tmp_path: Path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    D.launch(_loop_worker, 2, ref, 6)
    D.launch(_loop_worker, 2, run, 2)  # an "interrupted" run: stops after a checkpoint
    D.launch(_loop_worker, 2, run, 6)
    ckpt = torch.load(run / "ckpt" / "last.pth", weights_only=False)
    assert ckpt["iteration"] == 5 and len(ckpt["extra"]["_trainer"]["rng_ranks"]) == 2
    lines = (run / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == [str(i) for i in range(6)]
    for name in ("rank0.pt", "rank1.pt"):
        a, b = torch.load(ref / name), torch.load(run / name)
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_changed_world_size_starts_over_with_one_log_line(tmp_path: Path, caplog) -> None:
    """A checkpoint of a 1-process run resumed by 2 processes: the data position cannot be
    carried over, so the run starts over (one warning), instead of a traceback."""
    run = tmp_path / "run"
    D.launch(_loop_worker, 1, run, 2)  # "interrupted" after iteration 1, on one process
    D.launch(_loop_worker, 2, run, 4)
    ckpt = torch.load(run / "ckpt" / "last.pth", weights_only=False)
    assert ckpt["iteration"] == 3 and ckpt["extra"]["_trainer"]["world_size"] == 2
    lines = (run / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]  # from scratch
