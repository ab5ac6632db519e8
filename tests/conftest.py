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
    """A scratch Snakemake working directory (`--directory`) holding the default config.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    return path


TINY_SPEC = {"num_train": 40, "num_val": 8, "num_decoupled": 6, "min_single_label": 2, "min_size": 64, "max_size": 72}


def tiny_config() -> dict:
    """The instant-test config (detectron2 style): whole DAG, tiny data, seconds per stage."""
    import yaml

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["synthetic"].update(TINY_SPEC)
    cfg["cam"].update(epochs=2, batch_size=8, crop_size=64, resize_long=[56, 80], scales=[1.0, 0.5], ckpt_every=5)
    cfg["tagging"].update(patch_size=12)
    cfg["csd"].update(paste_batch=4, crop_size=64, resize_long=[56, 80])
    cfg["seco"].update(iterations=6, crop_size=48, proj_hidden=32, queue_size=48, ckpt_every=3, backbone_kwargs={"patch_size": 8, "depth": 4, "embed_dim": 32, "num_heads": 2, "img_size": 48}, schedule={"ptc_after": -1, "contrast_after": 1, "seg_after": 2, "prototypes_from": 1, "roi_final_cam_from": 4, "seg_final_cam_from": 0})
    cfg["deeplab"].update(iterations=6, batch_size=4, crop_size=48, ckpt_every=3, test_scales=[1.0], test_flip=False)
    return cfg


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    from pipeline.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("syn") / "VOC2012"
    generate(SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_SPEC.items()}), root)
    return root
