"""Segmentation metrics accumulated over a whole split, and their TSV/JSON writers.

Conventions: class 0 is background; 255 in a ground-truth mask means "ignore"; 255 in a
predicted (pseudo) mask means "uncertain". Scores are computed from one confusion matrix per
split, never averaged per image, because per-image IoU over-weights small images.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.data.labels import IGNORE_INDEX
from pipeline.io.atomic import write_text_atomic

BACKGROUND = 0


def _as_int_array(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {a.dtype}")
    # int64 so that num_classes * gt + pred cannot overflow a uint8 mask.
    return a.astype(np.int64, copy=False)


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{name} shape {shape}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {desc}")


class ConfusionMatrix:
    """Pixel confusion counts over a split: rows = ground-truth class, columns = predicted class.

    Only pixels with 0 <= gt < num_classes are counted, so GT 255 ("ignore") drops out.
    A predicted value outside [0, num_classes) (255 = "uncertain" in a pseudo mask) is counted
    as class `pred_ignore_as`; the default 0 follows IRN's evaluation, which scores uncertain
    pixels as background. With `pred_ignore_as=None` those pixels are left out entirely,
    which measures the precision of the confident part of a pseudo mask only.
    """

    def __init__(self, num_classes: int, pred_ignore_as: int | None = BACKGROUND) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if pred_ignore_as is not None and not 0 <= pred_ignore_as < num_classes:
            raise ValueError(f"pred_ignore_as must be None or in [0, {num_classes}), got {pred_ignore_as}")
        self.num_classes = num_classes
        self.pred_ignore_as = pred_ignore_as
        self._counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the int64 counts, shape (num_classes, num_classes)."""
        return self._counts.copy()

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image (or any batch of pixels) of GT and predicted class indices."""
        _check_same_shape(gt=gt, pred=pred)
        gt = _as_int_array("gt", gt).ravel()
        pred = _as_int_array("pred", pred).ravel()
        n = self.num_classes
        keep = (gt >= 0) & (gt < n)
        pred_out = (pred < 0) | (pred >= n)
        if self.pred_ignore_as is None:
            keep &= ~pred_out
        else:
            pred = np.where(pred_out, self.pred_ignore_as, pred)
        flat = n * gt[keep] + pred[keep]
        self._counts += np.bincount(flat, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix's counts (e.g. from a parallel shard) into this one."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge {other.num_classes}-class matrix into {self.num_classes}-class one"
            )
        if other.pred_ignore_as != self.pred_ignore_as:
            raise ValueError(
                f"cannot merge matrices with pred_ignore_as {other.pred_ignore_as} and {self.pred_ignore_as}"
            )
        self._counts += other._counts


def _counts_of(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    m = cm.matrix if isinstance(cm, ConfusionMatrix) else np.asarray(cm, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    return m


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0 (the score is undefined, not zero)."""
    out = np.full(np.shape(num), np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


# How mIoU averages the per-class IoUs (config key eval.miou_convention):
#   present  ToCo/SeCo (utils/evaluate.py): the mean over classes with GT pixels in the split, so a
#            class absent from the split cannot pull the mean down with a 0 from false positives;
#   all      IRN (step/eval_cam.py, chainercv): nanmean over all classes; a class predicted but
#            absent from the GT has IoU 0 and counts, one absent from both is undefined (skipped).
# They differ only on splits where some class has no GT pixels.
MIOU_CONVENTIONS = ("present", "all")


def mean_iou(iou: np.ndarray, gt_pixels: np.ndarray, convention: str) -> float:
    """mIoU of per-class `iou` (NaN where undefined) under `convention` (MIOU_CONVENTIONS)."""
    if convention == "present":
        return _nanmean(np.asarray(iou)[np.asarray(gt_pixels) > 0])
    if convention == "all":
        return _nanmean(np.asarray(iou))
    raise ValueError(f"mIoU convention must be one of {MIOU_CONVENTIONS}, got {convention!r}")


def scores(cm: ConfusionMatrix | np.ndarray, convention: str) -> dict[str, Any]:
    """Per-class and summary scores from a confusion matrix (rows = GT, columns = pred).

    Per-class arrays (length num_classes, NaN where undefined): "iou", "precision", "recall",
    "fp_over_tp" (ToCo's confusion ratio FP/TP), plus int64 "gt_pixels", "pred_pixels", "tp".
    Scalars: "miou" under `convention` (see MIOU_CONVENTIONS) and "miou_convention";
    "mean_accuracy" over classes present in the GT (recall is undefined elsewhere);
    "pixel_accuracy"; "num_present".
    """
    m = _counts_of(cm)
    tp = np.diag(m).copy()
    gt_pixels = m.sum(axis=1)
    pred_pixels = m.sum(axis=0)
    fp = pred_pixels - tp
    fn = gt_pixels - tp
    iou = _ratio(tp, tp + fp + fn)
    recall = _ratio(tp, gt_pixels)
    present = gt_pixels > 0
    total = int(m.sum())
    return {
        "iou": iou,
        "precision": _ratio(tp, pred_pixels),
        "recall": recall,
        "fp_over_tp": _ratio(fp, tp),
        "gt_pixels": gt_pixels,
        "pred_pixels": pred_pixels,
        "tp": tp,
        "miou": mean_iou(iou, gt_pixels, convention),
        "miou_convention": convention,
        "mean_accuracy": _nanmean(recall[present]),
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "num_present": int(present.sum()),
    }


def cooccurrence_confusion(
    cm: ConfusionMatrix | np.ndarray, pairs: Iterable[tuple[int, int]]
) -> dict[str, Any]:
    """How much of co-occurring class k is claimed by class c, relative to c's own hits.

    For each pair (c, k): cm[k, c] / cm[c, c], i.e. pixels of true class k predicted as c
    divided by the true positives of c; NaN if c has no true positives. Returns
    {"per_pair": {"c->k": value}, "mean": nanmean over pairs (NaN if none defined),
    "pooled": sum over pairs of cm[k, c] / sum over pairs of cm[c, c]}.

    The pooled ratio is the headline figure: the mean of per-pair ratios is dominated by a pair
    whose class c has only a handful of true positives (one collapsed class gave a mean of 713),
    while pooling weighs every pair by the true positives it is measured against.
    """
    m = _counts_of(cm)
    n = m.shape[0]
    per_pair: dict[str, float] = {}
    confused = hits = 0
    for c, k in pairs:
        if not (0 <= c < n and 0 <= k < n):
            raise ValueError(f"pair ({c}, {k}) out of range for {n} classes")
        tp = m[c, c]
        per_pair[f"{c}->{k}"] = float(m[k, c] / tp) if tp else math.nan
        confused, hits = confused + m[k, c], hits + tp
    return {"per_pair": per_pair, "mean": _nanmean(np.array(list(per_pair.values()), dtype=np.float64)),
            "pooled": float(confused / hits) if hits else math.nan}


class ContextFalseActivation:
    """False activation of a class on its typical context (e.g. "boat" on water).

    Context regions are labelled background in the GT; a separate HxW context map gives each
    pixel a context id (0 = none). For context x with associated class c, over the pixels
    with context x and GT background:
      "false_activation" = fraction predicted as c,
      "any_foreground"   = fraction predicted as any foreground class, i.e. neither
                           background 0 nor 255 ("uncertain" is not a class claim).
    """

    def __init__(self, context_to_class: Mapping[int, int]) -> None:
        for x, c in context_to_class.items():
            if x == 0:
                raise ValueError("context id 0 means 'no context' and cannot be mapped to a class")
            if c in (BACKGROUND, IGNORE_INDEX):
                raise ValueError(f"context {x} must map to a foreground class, got {c}")
        self.context_to_class = dict(context_to_class)
        ids = sorted(self.context_to_class)
        self._ids = ids
        self._pixels = dict.fromkeys(ids, 0)
        self._as_class = dict.fromkeys(ids, 0)
        self._as_foreground = dict.fromkeys(ids, 0)

    def update(self, gt: np.ndarray, pred: np.ndarray, context: np.ndarray) -> None:
        """Add one image: GT indices, predicted indices and context ids, all the same shape."""
        _check_same_shape(gt=gt, pred=pred, context=context)
        bg = _as_int_array("gt", gt) == BACKGROUND
        ctx = _as_int_array("context", context)[bg]
        pred_bg = _as_int_array("pred", pred)[bg]
        foreground = (pred_bg != BACKGROUND) & (pred_bg != IGNORE_INDEX)
        for x in self._ids:
            sel = ctx == x
            self._pixels[x] += int(sel.sum())
            self._as_class[x] += int((pred_bg[sel] == self.context_to_class[x]).sum())
            self._as_foreground[x] += int(foreground[sel].sum())

    def result(self) -> dict[str, Any]:
        """{"per_context": {x: {class, pixels, false_activation, any_foreground}}, "mean_*": ...}.

        Rates are NaN for a context that never occurred on GT background; means skip NaN.
        """
        per_context: dict[int, dict[str, Any]] = {}
        for x in self._ids:
            n = self._pixels[x]
            per_context[x] = {
                "class": self.context_to_class[x],
                "pixels": n,
                "false_activation": self._as_class[x] / n if n else math.nan,
                "any_foreground": self._as_foreground[x] / n if n else math.nan,
            }

        def mean_of(key: str) -> float:
            return _nanmean(np.array([v[key] for v in per_context.values()], dtype=np.float64))

        return {
            "per_context": per_context,
            "mean_false_activation": mean_of("false_activation"),
            "mean_any_foreground": mean_of("any_foreground"),
        }


CLASS_TABLE_COLUMNS = ("class", "iou", "precision", "recall", "fp_over_tp", "gt_pixels")


def write_class_table(path: str | os.PathLike, scores: Mapping[str, Any], class_names: Sequence[str]) -> None:
    """Write one TSV row per class (columns CLASS_TABLE_COLUMNS, header first), atomically.

    Undefined scores are written as "nan" so every row has the same columns.
    """
    n = len(scores["iou"])
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} classes")
    lines = ["\t".join(CLASS_TABLE_COLUMNS)]
    for i, name in enumerate(class_names):
        if any(ch in name for ch in "\t\r\n"):
            raise ValueError(f"class name {name!r} contains a tab or newline")
        floats = (f"{float(scores[key][i]):.6f}" for key in ("iou", "precision", "recall", "fp_over_tp"))
        lines.append("\t".join([name, *floats, str(int(scores["gt_pixels"][i]))]))
    write_text_atomic(path, "\n".join(lines) + "\n")


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/inf -> None (strict JSON has no NaN), arrays -> lists, keys -> str."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray | list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_summary(path: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """Write `summary` as JSON (NaN as null, keys sorted, indent 2), atomically."""
    text = json.dumps(_jsonable(summary), sort_keys=True, indent=2, allow_nan=False)
    write_text_atomic(path, text + "\n")
