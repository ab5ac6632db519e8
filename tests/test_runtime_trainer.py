"""run_loop: kill-and-resume bit-exactness (in a subprocess), metrics CSV, config changes."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.runtime.checkpoint import load_final, load_latest
from pipeline.runtime.trainer import TrainLoopConfig, TrainState, run_loop

ROOT = Path(__file__).resolve().parents[1]


def _demo(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.runtime_demo", "--out", str(out), *extra]


def _csv_iterations(path: Path) -> list[int]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        its = []
        for row in csv.DictReader(fh):
            try:
                its.append(int(row["iteration"]))
            except (TypeError, ValueError):
                pass  # a line being written right now
        return its


def test_kill_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = subprocess.Popen(_demo(ref_dir), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_demo(run_dir, "--sleep", "0.3"), cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # Kill after the first checkpoint AND a few CSV rows past it, so the restart has to
        # redo iterations and drop their stale rows.
        while not (
            (run_dir / "ckpt" / "last.pth").exists()
            and max(_csv_iterations(run_dir / "metrics.csv"), default=-1) >= 12
        ):
            assert victim.poll() is None, "demo exited before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not (run_dir / "final.pth").exists()
    ckpt = load_latest(run_dir / "ckpt")
    assert ckpt is not None and ckpt["iteration"] < 39
    assert max(_csv_iterations(run_dir / "metrics.csv")) > ckpt["iteration"]

    resumed = subprocess.run(_demo(run_dir), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    _, ref_err = ref.communicate(timeout=120)
    assert ref.returncode == 0, ref_err

    ref_model, ref_meta = load_final(ref_dir / "final.pth")
    run_model, run_meta = load_final(run_dir / "final.pth")
    assert ref_model.keys() == run_model.keys()
    for key in ref_model:
        assert torch.equal(ref_model[key], run_model[key]), key
    for key in ref_meta["ema"]:
        assert torch.equal(ref_meta["ema"][key], run_meta["ema"][key]), key
    assert _csv_iterations(run_dir / "metrics.csv") == list(range(40))
    assert _csv_iterations(ref_dir / "metrics.csv") == list(range(40))
    # Same losses logged, row for row.
    with open(ref_dir / "metrics.csv") as a, open(run_dir / "metrics.csv") as b:
        assert [r["loss"] for r in csv.DictReader(a)] == [r["loss"] for r in csv.DictReader(b)]


def _tiny_state(config: dict | None = None) -> TrainState:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return TrainState(model, torch.optim.SGD(model.parameters(), lr=0.5), config=config)


def _cfg(tmp_path: Path, max_iters: int = 6, ckpt_every: int = 2) -> TrainLoopConfig:
    return TrainLoopConfig(
        max_iters=max_iters,
        ckpt_every=ckpt_every,
        ckpt_dir=tmp_path / "ckpt",
        metrics_csv=tmp_path / "metrics.csv",
        log_every=2,
    )


def _step_for(state: TrainState, calls: list[int]):
    def step(it: int) -> dict[str, float]:
        calls.append(it)
        loss = state.model(torch.ones(2, 3)).pow(2).mean()
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        logs = {"loss": loss.item()}
        if it >= 3:  # a term that only appears later widens the CSV
            logs["aux"] = float(it)
        return logs

    return step


def test_finished_run_is_not_repeated_and_csv_widens(tmp_path: Path) -> None:
    calls: list[int] = []
    state = _tiny_state({"a": 1})
    run_loop(_step_for(state, calls), state, _cfg(tmp_path))
    assert calls == list(range(6)) and state.iteration == 5
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["iteration", "loss", "aux", "lr", "seconds"]
    assert [r["aux"] for r in rows] == ["", "", "", "3", "4", "5"]
    assert load_latest(tmp_path / "ckpt")["iteration"] == 5

    again: list[int] = []
    state2 = _tiny_state({"a": 1})
    run_loop(_step_for(state2, again), state2, _cfg(tmp_path))
    assert again == []
    for p, q in zip(state.model.parameters(), state2.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_changed_config_discards_stale_checkpoint(tmp_path: Path) -> None:
    state = _tiny_state({"lr": 0.5})
    run_loop(_step_for(state, []), state, _cfg(tmp_path, max_iters=4))
    calls: list[int] = []
    state2 = _tiny_state({"lr": 0.1})
    run_loop(_step_for(state2, calls), state2, _cfg(tmp_path, max_iters=4))
    assert calls == [0, 1, 2, 3]
    assert _csv_iterations(tmp_path / "metrics.csv") == [0, 1, 2, 3]
    assert load_latest(tmp_path / "ckpt")["config"] == {"lr": 0.1}


def test_changed_code_discards_stale_checkpoint(tmp_path: Path) -> None:
    """A rerun after a code change (same config) retrains instead of returning the old weights."""
    state = _tiny_state({"lr": 0.5})
    state.code = "old"
    run_loop(_step_for(state, []), state, _cfg(tmp_path, max_iters=4))
    same: list[int] = []
    state_same = _tiny_state({"lr": 0.5})
    state_same.code = "old"
    run_loop(_step_for(state_same, same), state_same, _cfg(tmp_path, max_iters=4))
    assert same == []
    calls: list[int] = []
    state2 = _tiny_state({"lr": 0.5})
    state2.code = "new"
    run_loop(_step_for(state2, calls), state2, _cfg(tmp_path, max_iters=4))
    assert calls == [0, 1, 2, 3]
    assert load_latest(tmp_path / "ckpt")["extra"]["_trainer"]["code"] == "new"


def test_bad_loop_config_is_rejected(tmp_path: Path) -> None:
    state = _tiny_state()
    with pytest.raises(PipelineError, match="ckpt_every"):
        run_loop(_step_for(state, []), state, _cfg(tmp_path, ckpt_every=0))
