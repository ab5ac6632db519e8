"""Shared fixtures: tiny generated datasets; tests never reach a model hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, so `python`/`snakemake` match."""
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def workdir(path: Path) -> Path:
    """A scratch Snakemake working directory (`--directory`); the defaults come from the
    repository's config.yaml beside the Snakefile."""
    path.mkdir(parents=True, exist_ok=True)
    return path


TINY_CONFIG = REPO / "configs" / "tiny.yaml"


def preset_config(preset: Path | None) -> dict:
    """config.yaml with a preset layered on it, as `snakemake --configfile PRESET` resolves it."""
    import yaml
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if preset is not None:
        update_config(cfg, yaml.safe_load(preset.read_text()))
    return cfg


def tiny_config() -> dict:
    """The instant-test config (configs/tiny.yaml over config.yaml): whole DAG, tiny data."""
    return preset_config(TINY_CONFIG)


TINY_SPEC = {k: v for k, v in tiny_config()["synthetic"].items()
             if k in ("num_train", "num_val", "num_decoupled", "min_single_label", "min_size", "max_size")}


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    from pipeline.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("syn") / "VOC2012"
    generate(SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_SPEC.items()}), root)
    return root
