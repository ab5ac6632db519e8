"""Intermediate training checkpoints (for resume) and the final model file (a rule output).

Intermediate checkpoints live outside the Snakemake DAG in a directory the caller chooses
(e.g. `results/checkpoints/<stage>/`): `last.pth` is the newest, `prev.pth` the one before.
Both are written atomically, so a job killed at any instant leaves at least one readable file.

Files are read with `torch.load(weights_only=False)`: they hold optimizer/scheduler states,
numpy RNG tuples and config dicts that the weights-only unpickler rejects. That is acceptable
because this pipeline only ever loads files it wrote itself; never point these loaders at
downloaded checkpoints.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path
from pipeline.runtime.distributed import unwrap
from pipeline.runtime.rng import capture_rng_state

log = logging.getLogger(__name__)

LAST = "last.pth"
PREV = "prev.pth"


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    iteration: int,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
    keep_prev: bool = True,
) -> Path:
    """Write `<ckpt_dir>/last.pth` atomically; the old `last.pth` becomes `prev.pth`.

    `iteration` is the last COMPLETED iteration; a resumed run continues at `iteration + 1`.
    `rng` defaults to this process's RNG states (see `rng.capture_rng_state`).
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "iteration": int(iteration),
        "rng": rng if rng is not None else capture_rng_state(),
        "config": config,
        "extra": extra or {},
    }
    last = ckpt_dir / LAST
    with atomic_path(last) as tmp:
        torch.save(ckpt, tmp)
        # Rotate only once the new file is complete. A kill between this rename and the final
        # one leaves prev.pth without last.pth, which load_latest() handles.
        if keep_prev and last.exists():
            os.replace(last, ckpt_dir / PREV)
    return last


def _load(path: Path) -> dict[str, Any]:
    # weights_only=False: trusted files written by save_checkpoint (see module docstring).
    return torch.load(path, map_location="cpu", weights_only=False)


def load_latest(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The newest readable checkpoint in `ckpt_dir` (last.pth, else prev.pth), or None."""
    ckpt_dir = Path(ckpt_dir)
    for name in (LAST, PREV):
        path = ckpt_dir / name
        if not path.exists():
            continue
        try:
            ckpt = _load(path)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
            log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
            continue
        ckpt["path"] = str(path)
        return ckpt
    return None


def save_final(
    path: str | os.PathLike, model_state: dict[str, Any], meta: dict[str, Any] | None = None
) -> Path:
    """Write the final model (a rule output) atomically as {"model": state_dict, "meta": meta}.

    Tensors are moved to CPU so the file loads on machines without a GPU.
    """
    state = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model_state.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"model": state, "meta": meta or {}}, tmp)
    return path


def load_final(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model state_dict, meta) from a file written by `save_final`."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: model file not found")
    try:
        blob = _load(path)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        raise PipelineError(f"{path}: cannot read model file ({exc})") from exc
    if not isinstance(blob, dict) or "model" not in blob:
        raise PipelineError(f"{path}: not a model file written by save_final (no 'model' key)")
    return blob["model"], blob.get("meta", {})
