"""Evaluate predicted label maps over a split: mIoU, co-occurrence confusion, context false
activation. Used by every evaluation stage (CAM seeds, masks, final predictions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.cli import require
from pipeline.data import SegDataset, SyntheticDataset
from pipeline.errors import PipelineError
from pipeline.eval.metrics import (
    MIOU_CONVENTIONS,
    ConfusionMatrix,
    ContextFalseActivation,
    cooccurrence_confusion,
    scores,
)
from pipeline.eval.pairs import pair_name


def miou_convention(cfg: dict) -> str:
    """The evaluation stages' config key eval.miou_convention, checked."""
    value = require(cfg, "eval.miou_convention")
    if value not in MIOU_CONVENTIONS:
        raise PipelineError(f"config key eval.miou_convention: {value!r} is not one of {', '.join(MIOU_CONVENTIONS)}")
    return value


class SegEvaluator:
    """`miou_convention`: how mIoU averages the classes (config key eval.miou_convention,
    `pipeline.eval.metrics.MIOU_CONVENTIONS`); the summary names it."""

    def __init__(self, ds: SegDataset, pairs: list[tuple[int, int]], miou_convention: str) -> None:
        if miou_convention not in MIOU_CONVENTIONS:
            raise ValueError(f"mIoU convention must be one of {MIOU_CONVENTIONS}, got {miou_convention!r}")
        self.ds = ds
        self.pairs = pairs
        self.miou_convention = miou_convention
        self.cm = ConfusionMatrix(ds.num_classes)
        self.context = ContextFalseActivation(ds.context_to_class) if isinstance(ds, SyntheticDataset) else None

    def update(self, image_id: str, pred: np.ndarray, gt: np.ndarray | None = None) -> None:
        gt = self.ds.mask(image_id) if gt is None else gt
        self.cm.update(gt, pred)
        if self.context is not None:
            self.context.update(gt, pred, self.ds.context_map(image_id))

    def summary(self) -> dict[str, Any]:
        s = self.scores()
        co = cooccurrence_confusion(self.cm, self.pairs)
        out: dict[str, Any] = {
            "miou": s["miou"],
            "miou_convention": self.miou_convention,
            "pixel_accuracy": s["pixel_accuracy"],
            "mean_accuracy": s["mean_accuracy"],
            "per_class_iou": {n: float(v) for n, v in zip(self.ds.class_names, s["iou"], strict=True)},
            "cooccurrence_confusion": {pair_name(self.ds, p): v for p, v in zip(self.pairs, co["per_pair"].values(), strict=True)},
            "cooccurrence_confusion_mean": co["mean"],
            "cooccurrence_confusion_pooled": co["pooled"],
        }
        if self.context is not None:
            fa = self.context.result()
            names = self.ds.meta["context_names"]
            out["context_false_activation"] = {
                names[x - 1]: v["false_activation"] for x, v in fa["per_context"].items()
            }
            out["context_false_activation_mean"] = fa["mean_false_activation"]
        return out

    def scores(self) -> dict[str, Any]:
        return scores(self.cm, self.miou_convention)
