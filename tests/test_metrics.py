"""Metrics checked against straightforward per-pixel reference computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.eval.metrics import (
    ConfusionMatrix,
    ContextFalseActivation,
    cooccurrence_confusion,
    scores,
    write_class_table,
    write_summary,
)


def _reference_matrix(pairs, n: int) -> list[list[int]]:
    """Plain loops; predicted values outside [0, n) count as background (IRN)."""
    m = [[0] * n for _ in range(n)]
    for gt, pred in pairs:
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
            if not 0 <= g < n:
                continue
            m[g][p if 0 <= p < n else 0] += 1
    return m


def _reference_iou(gt_all: np.ndarray, pred_all: np.ndarray, n: int) -> list[float]:
    valid = gt_all != 255
    pred_all = np.where((pred_all >= n), 0, pred_all)
    out = []
    for c in range(n):
        tp = int(np.sum((gt_all == c) & (pred_all == c) & valid))
        fp = int(np.sum((gt_all != c) & (pred_all == c) & valid))
        fn = int(np.sum((gt_all == c) & (pred_all != c) & valid))
        out.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    return out


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_matches_reference_on_random_masks() -> None:
    n = 6
    rng = np.random.default_rng(42)
    images = []
    for _ in range(4):
        gt = rng.integers(0, n - 1, size=(11, 13)).astype(np.uint8)  # class n-1 never in GT
        pred = rng.integers(0, n, size=(11, 13)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.15] = 255
        pred[rng.random(pred.shape) < 0.1] = 255
        images.append((gt, pred))

    cm = ConfusionMatrix(n)
    for gt, pred in images:
        cm.update(gt, pred)
    assert cm.matrix.dtype == np.int64
    assert cm.matrix.tolist() == _reference_matrix(images, n)

    gt_all = np.concatenate([g.ravel() for g, _ in images]).astype(np.int64)
    pred_all = np.concatenate([p.ravel() for _, p in images]).astype(np.int64)
    ref = _reference_iou(gt_all, pred_all, n)
    got = scores(cm, "present")["iou"].tolist()
    assert all(_same(a, b) for a, b in zip(got, ref, strict=True)), (got, ref)


def test_merge_equals_single_pass() -> None:
    rng = np.random.default_rng(3)
    a_gt, a_pr, b_gt, b_pr = (rng.integers(0, 4, size=(5, 5)) for _ in range(4))
    whole, a, b = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(a_gt, a_pr)
    whole.update(b_gt, b_pr)
    a.update(a_gt, a_pr)
    b.update(b_gt, b_pr)
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, whole.matrix)
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(5))


def test_miou_conventions_on_a_hand_built_matrix() -> None:
    # rows = GT, columns = prediction; 4 classes:
    #   0: 6 px, 4 right, 2 called 1;  1: 4 px, 3 right, 1 called 2;
    #   2: no GT pixel, but predicted on 1 px (a false positive);  3: neither in GT nor predicted
    m = np.array([[4, 2, 0, 0],
                  [0, 3, 1, 0],
                  [0, 0, 0, 0],
                  [0, 0, 0, 0]])
    iou0, iou1 = 4 / (6 + 4 - 4), 3 / (4 + 5 - 3)
    present = scores(m, "present")
    assert present["miou_convention"] == "present"
    assert present["miou"] == pytest.approx((iou0 + iou1) / 2)  # ToCo: GT classes only
    every = scores(m, "all")
    assert every["miou_convention"] == "all"
    assert every["miou"] == pytest.approx((iou0 + iou1 + 0.0) / 3)  # IRN: the FP-only class counts 0
    assert math.isnan(every["iou"][3])  # absent from both: undefined, skipped by both conventions
    # chainercv's formula as in IRN's eval_cam, written out
    gtj, resj, tp = m.sum(1), m.sum(0), np.diag(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        assert every["miou"] == pytest.approx(np.nanmean(tp / (gtj + resj - tp)))
    # when every class is in the GT the two agree
    full = np.array([[5, 1], [2, 4]])
    assert scores(full, "all")["miou"] == scores(full, "present")["miou"]
    with pytest.raises(ValueError, match="mIoU convention"):
        scores(m, "union")


def test_miou_ignores_classes_absent_from_gt() -> None:
    cm = ConfusionMatrix(3)
    # GT has classes 0 and 1 only; class 2 is predicted on one pixel (a false positive).
    cm.update(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 1, 2]]))
    s = scores(cm, "present")
    assert s["iou"].tolist()[:2] == [1.0, 0.5]
    assert s["iou"][2] == 0.0
    assert s["miou"] == 0.75
    assert s["num_present"] == 2
    assert s["pixel_accuracy"] == 0.75
    assert s["mean_accuracy"] == 0.75
    assert math.isnan(s["recall"][2]) and s["precision"][2] == 0.0
    assert s["fp_over_tp"].tolist()[:2] == [0.0, 0.0] and math.isnan(s["fp_over_tp"][2])


def test_gt_255_ignored() -> None:
    cm = ConfusionMatrix(2)
    cm.update(np.array([[255, 255, 1]], dtype=np.uint8), np.array([[1, 0, 1]], dtype=np.uint8))
    assert cm.matrix.tolist() == [[0, 0], [0, 1]]


def test_pred_255_as_background_by_default() -> None:
    gt, pred = np.array([[0, 1, 1]]), np.array([[255, 255, 1]])
    cm = ConfusionMatrix(2)
    cm.update(gt, pred)
    assert cm.matrix.tolist() == [[1, 0], [1, 1]]


def test_pred_255_excluded_when_none() -> None:
    gt, pred = np.array([[0, 1, 1]]), np.array([[255, 255, 1]])
    cm = ConfusionMatrix(2, pred_ignore_as=None)
    cm.update(gt, pred)
    assert cm.matrix.tolist() == [[0, 0], [0, 1]]


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        ConfusionMatrix(2).update(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_cooccurrence_confusion_known_numbers() -> None:
    # rows = GT, cols = pred; classes: 0 bg, 1 boat, 2 water-like class, 3 train.
    m = np.array(
        [
            [50, 0, 0, 0],
            [0, 20, 0, 0],
            [0, 5, 10, 0],
            [0, 0, 0, 0],
        ]
    )
    out = cooccurrence_confusion(m, [(1, 2), (3, 2)])
    assert out["per_pair"]["1->2"] == 0.25
    assert math.isnan(out["per_pair"]["3->2"])  # class 3 has no true positives
    assert out["mean"] == 0.25
    assert out["pooled"] == 0.25


def test_pooled_cooccurrence_is_not_dominated_by_a_collapsed_class() -> None:
    # class 1 has 100 true positives and claims 10 pixels of class 2; class 3 has 1 true positive
    # and claims 50 pixels of class 2: per-pair ratios 0.1 and 50 (mean 25.05), pooled 60 / 101.
    m = np.zeros((4, 4), int)
    m[1, 1], m[2, 1], m[3, 3], m[2, 3] = 100, 10, 1, 50
    out = cooccurrence_confusion(m, [(1, 2), (3, 2)])
    assert out["mean"] == pytest.approx(25.05)
    assert out["pooled"] == pytest.approx(60 / 101)


def test_context_false_activation_4x4() -> None:
    gt = np.array(
        [
            [0, 0, 0, 0],
            [0, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 255, 0],
        ]
    )
    # context 1 (water -> class 1 boat) covers the whole image, including GT-boat pixels,
    # which must not count; context 2 (rail -> class 3 train) is absent.
    context = np.array(
        [
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            [1, 1, 1, 1],
        ]
    )
    pred = np.array(
        [
            [1, 1, 2, 0],
            [0, 0, 255, 0],
            [1, 1, 1, 0],
            [1, 1, 1, 0],
        ]
    )
    acc = ContextFalseActivation({1: 1, 2: 3})
    acc.update(gt, pred, context)
    res = acc.result()
    water = res["per_context"][1]
    # GT-background pixels with context 1: 8 (rows 0-1) + (2,2),(2,3),(3,3) = 11; (3,2) is ignore.
    assert water["pixels"] == 11
    assert water["false_activation"] == 3 / 11  # (0,0), (0,1), (2,2)
    assert water["any_foreground"] == 4 / 11  # plus (0,2) predicted 2; 255 is not foreground
    rail = res["per_context"][2]
    assert rail["pixels"] == 0 and math.isnan(rail["false_activation"])
    assert res["mean_false_activation"] == 3 / 11


def test_writers(tmp_path) -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 1, 2]]))
    s = scores(cm, "present")
    table = tmp_path / "classes.tsv"
    write_class_table(table, s, ["background", "boat", "train"])
    rows = [line.split("\t") for line in table.read_text().splitlines()]
    assert rows[0] == ["class", "iou", "precision", "recall", "fp_over_tp", "gt_pixels"]
    assert rows[2] == ["boat", "0.500000", "1.000000", "0.500000", "0.000000", "2"]
    assert rows[3][3] == "nan"

    summary = tmp_path / "summary.json"
    write_summary(summary, {"miou": s["miou"], "b": math.nan, "iou": s["iou"], "ctx": {1: 0.5}})
    text = summary.read_text()
    data = json.loads(text)
    assert data == {"b": None, "ctx": {"1": 0.5}, "iou": [1.0, 0.5, 0.0], "miou": 0.75}
    assert text.index('"b"') < text.index('"ctx"') < text.index('"iou"') < text.index('"miou"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tsv", "summary.json"]
