"""The dataset index (results/dataset/index.json): ids, sizes and image-level labels per split.

Built by the index_dataset stage (its only writer; schema in docs/ARTIFACTS.md) after every
image is decoded and every mask checked; every later stage reads it instead of decoding masks.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.data import SegDataset
from pipeline.errors import PipelineError

INDEX_VERSION = 1


def _check_one(ds: SegDataset, image_id: str) -> tuple[str, list[int], list[int], bool]:
    img = ds.image(image_id)
    mask = ds.mask(image_id, check_size=img.shape[:2])
    labels = ds.labels(image_id) if mask is None else None
    if mask is not None:
        classes = [int(c) for c in np.unique(mask) if 0 < c < ds.num_classes]
    else:
        classes = [int(i) + 1 for i in np.flatnonzero(labels)]
    return image_id, list(img.shape[:2]), classes, mask is not None


def build_index(ds: SegDataset, splits: dict[str, str], workers: int = 1,
                min_train: dict[str, int] | None = None) -> dict:
    """Validate every image and mask of `splits` (role -> split name) and index them.
    `min_train` maps config keys (batch sizes) to the training images each needs at least."""
    out: dict = {"version": INDEX_VERSION, "kind": ds.kind, "class_names": ds.class_names, "splits": {}}
    for role, split in splits.items():
        ids = ds.ids(split)
        where = f"{ds.split_path(split)} (dataset.splits.{role}: {split})"
        if not ids:
            raise PipelineError(f"{where}: the split list is empty")
        if len(set(ids)) != len(ids):
            raise PipelineError(f"{where}: the split list has duplicate ids")
        if role == "train":
            for key, need in (min_train or {}).items():
                if len(ids) < need:
                    raise PipelineError(f"{where}: {len(ids)} training images, fewer than config key {key} ({need})")
        check = partial(_check_one, ds)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                rows = list(pool.map(check, ids, chunksize=64))
        else:
            rows = [check(i) for i in ids]
        n_fg = ds.num_classes - 1
        counts = np.zeros((n_fg, n_fg), np.int64)
        for _, _, classes, _ in rows:
            for a in classes:
                for b in classes:
                    counts[a - 1, b - 1] += 1
        out["splits"][role] = {
            "split": split,
            "ids": ids,
            "sizes": {r[0]: r[1] for r in rows},
            "labels": {r[0]: r[2] for r in rows},
            "has_masks": all(r[3] for r in rows),
            "single_label": sum(len(r[2]) == 1 for r in rows),
            "class_cooccurrence": counts.tolist(),
        }
    return out


def load_index(path: str | Path) -> dict:
    path = Path(path)
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read dataset index ({exc})") from exc
    if index.get("version") != INDEX_VERSION:
        raise PipelineError(f"{path}: dataset index version {index.get('version')}, expected {INDEX_VERSION}")
    return index
