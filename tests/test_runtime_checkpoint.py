"""Checkpoint rotation, fallback to prev.pth, final model files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.runtime.checkpoint import load_final, load_latest, save_checkpoint, save_final


def _save(ckpt_dir: Path, model: nn.Module, it: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(ckpt_dir, model=model, optimizer=opt, iteration=it, config={"k": 1}, extra={"x": it})


def test_latest_and_fallback(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    model = nn.Linear(2, 1)
    _save(tmp_path, model, 9)
    _save(tmp_path, model, 19)
    ckpt = load_latest(tmp_path)
    assert ckpt["iteration"] == 19 and ckpt["extra"] == {"x": 19} and ckpt["scheduler"] is None
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert torch.load(tmp_path / "prev.pth", weights_only=False)["iteration"] == 9
    (tmp_path / "last.pth").write_bytes(b"truncated")
    assert load_latest(tmp_path)["iteration"] == 9
    (tmp_path / "last.pth").unlink()
    assert load_latest(tmp_path)["iteration"] == 9
    assert not list(tmp_path.glob(".*tmp*"))


def test_final_roundtrip_and_errors(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    save_final(tmp_path / "m.pth", model.state_dict(), {"stage": "cam"})
    state, meta = load_final(tmp_path / "m.pth")
    assert meta == {"stage": "cam"} and torch.equal(state["weight"], model.weight)
    with pytest.raises(PipelineError, match="missing.pth"):
        load_final(tmp_path / "missing.pth")
    torch.save({"nope": 1}, tmp_path / "bad.pth")
    with pytest.raises(PipelineError, match="bad.pth"):
        load_final(tmp_path / "bad.pth")
