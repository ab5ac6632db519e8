"""A tiny CPU training run through the full runtime; the kill-and-resume test drives it.

    python -m tests.runtime_demo --out DIR [--iters 40] [--ckpt-every 10] [--sleep 0.1]

It exercises every piece a resume must restore: dropout and input noise (global torch RNG),
numpy noise, SGD momentum, an LR schedule, an EMA copy of the model (an `extra` object) and
a ResumableLoader with random per-sample augmentation. Writes DIR/final.pth (model + EMA).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.runtime.checkpoint import save_final
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.rng import seed_everything
from pipeline.runtime.trainer import TrainLoopConfig, TrainState, run_loop


class _NoisyData(Dataset):
    def __init__(self, n: int = 48) -> None:
        gen = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 8, generator=gen)
        self.y = torch.randint(0, 3, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Random "augmentation": depends on the RNGs the loader seeds per sample.
        jitter = torch.randn(8) * 0.05 + float(np.random.uniform(-0.01, 0.01))
        return self.x[index] + jitter, self.y[index]


class _Ema:
    def __init__(self, model: nn.Module, decay: float = 0.9) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.mul_(self.decay).add_(p, alpha=1 - self.decay)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--ckpt-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds per step, so a test can kill mid-run")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # bit-exact comparisons need a fixed reduction order
    seed_everything(args.seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=15, gamma=0.5)
    ema = _Ema(model)
    data = ResumableLoader(_NoisyData(), batch_size=5, seed=args.seed, num_workers=args.workers)
    config = {"iters": args.iters, "seed": args.seed}

    def step(it: int) -> dict[str, float]:
        x, y = next(data)
        x = x + 0.01 * torch.randn_like(x) + float(np.random.normal(0, 0.01))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
        if args.sleep:
            time.sleep(args.sleep)
        return {"loss": loss.item()}

    state = TrainState(model, opt, sched, data=data, extra={"ema": ema}, config=config)
    cfg = TrainLoopConfig(
        max_iters=args.iters,
        ckpt_every=args.ckpt_every,
        ckpt_dir=args.out / "ckpt",
        metrics_csv=args.out / "metrics.csv",
        log_every=5,
        seed=args.seed,
        desc="demo",
    )
    run_loop(step, state, cfg)
    save_final(args.out / "final.pth", model.state_dict(), {"ema": ema.state_dict(), "iters": args.iters})


if __name__ == "__main__":
    main()
