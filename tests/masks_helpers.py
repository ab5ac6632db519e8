"""Shared set-up for the mask / CRF / DeepLab tests: a tiny synthetic dataset with its index, and
seed artifacts built in the test (CAM scores like make_cam's, segmentation logits per SeCo's
contract) from the GT masks plus seeded noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from pipeline.data import open_dataset
from pipeline.data.index import build_index
from pipeline.io.h5store import ArtifactWriter
from tests.conftest import REPO, tiny_config


def tiny_cfg(root: Path) -> dict:
    cfg = tiny_config()
    cfg["dataset"] = {"kind": "synthetic", "root": str(root), "split_dir": None,
                      "splits": {"train": "train", "eval": "train", "val": "val", "decoupled": "decoupled"}}
    return cfg


def write_index(cfg: dict, path: Path) -> dict:
    ds = open_dataset(cfg["dataset"])
    index = build_index(ds, {k: v for k, v in cfg["dataset"]["splits"].items() if v})
    path.write_text(json.dumps(index))
    return index


def _coarse(plane: np.ndarray, stride: int) -> np.ndarray:
    return plane[::stride, ::stride]


def write_fake_cams(path: Path, ds, ids: list[str], seed: int = 0, stride: int = 4) -> None:
    """make_cam-like scores: per present class a noisy, dilated copy of its GT region, max-normalised."""
    rng = np.random.default_rng(seed)
    with ArtifactWriter(path, "scores", ds.class_names, {"test": "cams"}) as w:
        for image_id in ids:
            gt = ds.mask(image_id)
            classes = [int(c) for c in np.unique(gt) if 0 < c < ds.num_classes]
            planes = []
            for c in classes:
                p = _coarse((gt == c).astype(np.float32), stride) * 0.9 + rng.random(_coarse(gt, stride).shape) * 0.35
                planes.append(p / (p.max() + 1e-5))
            h, w_ = _coarse(gt, stride).shape
            arr = np.stack(planes) if planes else np.zeros((0, h, w_), np.float32)
            w.write_scores(image_id, arr, classes, gt.shape, stride=stride)


def write_fake_logits(path: Path, ds, ids: list[str], seed: int = 0, stride: int = 4) -> None:
    """SeCo's seg_logits contract: float16 logits of ALL classes 0..C-1 at a reduced stride."""
    rng = np.random.default_rng(seed)
    classes = list(range(ds.num_classes))
    with ArtifactWriter(path, "logits", ds.class_names, {"test": "logits"}) as w:
        for image_id in ids:
            gt = _coarse(ds.mask(image_id), stride)
            onehot = np.stack([(gt == c) for c in classes]).astype(np.float32)
            logits = 3.0 * onehot + rng.normal(0, 1.0, onehot.shape)
            w.write_scores(image_id, logits, classes, ds.mask(image_id).shape, stride=stride)


def default_sections(*names: str) -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    return {n: cfg[n] for n in names}
