"""SeCo's patch tagging on hand-built ROI maps."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.seco.tagging import (
    UNCERTAIN,
    TagParams,
    global_tag,
    local_tag,
    patch_centres,
    roi_map,
    tag_correct,
    tag_image,
)


def test_roi_map_thresholds():
    scores = np.array([[[0.9, 0.5, 0.1]], [[0.2, 0.6, 0.2]]], np.float32)  # 2 classes, 1x3 image
    roi = roi_map(scores, np.array([3, 7]), high=0.7, low=0.25)
    assert roi.tolist() == [[3, UNCERTAIN, 0]]
    assert roi_map(np.zeros((0, 2, 2), np.float32), np.array([], int), 0.7, 0.25).tolist() == [[0, 0], [0, 0]]


def test_global_tag_rules():
    two = np.array([[2, 5, UNCERTAIN]], np.int16)
    assert global_tag(two)[0] == UNCERTAIN
    one = np.array([[2, UNCERTAIN, 0]], np.int16)
    tag, relabelled = global_tag(one)
    assert tag == 2 and relabelled.tolist() == [[2, 2, 0]]
    none = np.array([[0, UNCERTAIN]], np.int16)
    assert global_tag(none)[0] == 1  # the official initial value


def test_background_rule_count_vs_official_index_sum():
    patch = np.zeros((10, 10), np.int16)
    patch[:3, :5] = 9  # 15 % of the pixels are class 9
    count = TagParams(bg_rule="count")
    official = TagParams(bg_rule="index_sum")
    assert local_tag(patch, count) == 0  # 0.15 <= 0.2: background
    assert local_tag(patch, official) == 9  # sum of indices 15*9/100 = 1.35 > 0.2
    mixed = np.zeros((10, 10), np.int16)
    mixed[:5, :5], mixed[5:, 5:] = 2, 4
    assert local_tag(mixed, count) == UNCERTAIN  # two confident classes
    unc = np.full((10, 10), UNCERTAIN, np.int16)
    assert local_tag(unc, count) == UNCERTAIN  # no confident class


def test_patch_centres_prefer_uncertain_and_fit():
    roi = np.zeros((40, 40), np.int16)
    roi[20:30, 10:30] = UNCERTAIN
    c = patch_centres(roi, 10, 8, np.random.default_rng(0))
    assert len(c) == 10
    assert all(roi[y, x] == UNCERTAIN for y, x in c)
    only_bg = np.zeros((20, 20), np.int16)
    c = patch_centres(only_bg, 10, 8, np.random.default_rng(0))
    assert ((c >= 4) & (c <= 16)).all()  # every 8x8 patch [c-4, c+4) lies inside
    with pytest.raises(ValueError):
        patch_centres(np.zeros((4, 4), np.int16), 2, 8, np.random.default_rng(0))


def test_tag_image_rows_and_determinism():
    scores = np.zeros((1, 32, 32), np.float32)
    scores[0, 8:24, 8:24] = 0.9
    scores[0, 6:26, 6:8] = 0.5
    a = tag_image(scores, np.array([4]), TagParams(patch_size=8), np.random.default_rng(1))
    b = tag_image(scores, np.array([4]), TagParams(patch_size=8), np.random.default_rng(1))
    assert a[0] == 4 and np.array_equal(a[1], b[1]) and a[1].shape == (10, 5)
    y0, x0, y1, x1 = a[1][0, :4]
    assert y1 - y0 == 8 and x1 - x0 == 8


def test_tag_correct():
    gt = np.zeros((10, 10), np.uint8)
    gt[:6] = 3
    assert tag_correct(gt, 3) is True and tag_correct(gt, 5) is False
    assert tag_correct(gt, 0) is False  # 60 % foreground
    gt[:] = 0
    gt[0, :] = 7
    assert tag_correct(gt, 0) is True  # 10 % foreground
    assert tag_correct(gt, UNCERTAIN) is None


def test_index_sum_counts_uncertain_as_one_before_relabelling():
    raw = np.zeros((10, 10), np.int16)
    raw[:2, :] = UNCERTAIN  # 20 % uncertain; after relabelling they would carry class 9
    relabelled = np.where(raw == UNCERTAIN, 9, raw).astype(np.int16)
    official = TagParams(bg_rule="index_sum")
    assert local_tag(relabelled, official, raw) == 0  # sum(u)/area = 0.2 <= 0.2
    assert local_tag(relabelled, official) == 9  # without the raw map the share would be 1.8
