"""Datasets behind one reader interface: `open_dataset(cfg)`."""

from __future__ import annotations

from pipeline.data.base import SegDataset, read_rgb
from pipeline.data.coco import COCO_CLASSES, COCODataset
from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.voc import VOC_CLASSES, SyntheticDataset, VOCDataset
from pipeline.errors import PipelineError

__all__ = [
    "COCO_CLASSES", "IGNORE_INDEX", "VOC_CLASSES", "COCODataset", "SegDataset", "SyntheticDataset",
    "VOCDataset", "open_dataset", "read_rgb",
]

KINDS = {"voc": VOCDataset, "coco": COCODataset, "synthetic": SyntheticDataset}


def open_dataset(cfg: dict) -> SegDataset:
    """Build the reader named by `dataset.kind` from the `dataset` config section."""
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise PipelineError(f"config key dataset.kind: unknown dataset kind {kind!r} (expected one of {sorted(KINDS)})")
    return KINDS[kind](cfg["root"], cfg.get("split_dir"))
