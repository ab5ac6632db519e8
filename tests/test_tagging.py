"""The offline patch tagging (tag_patches) through SeCo's one `assign_tags`, on hand-built ROI maps."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data.labels import UNCERTAIN
from pipeline.seco.tagging import assign_tags, roi_map, tag_correct, tag_image


def test_roi_map_thresholds():
    scores = np.array([[[0.9, 0.5, 0.1]], [[0.2, 0.6, 0.2]]], np.float32)  # 2 classes, 1x3 image
    roi = roi_map(scores, np.array([3, 7]), high=0.7, low=0.25)
    assert roi.tolist() == [[3, UNCERTAIN, 0]]
    assert roi_map(np.zeros((0, 2, 2), np.float32), np.array([], int), 0.7, 0.25).tolist() == [[0, 0], [0, 0]]


def _single_class_roi() -> np.ndarray:
    roi = np.zeros((40, 40), np.int64)
    roi[10:30, 10:30] = UNCERTAIN
    roi[16:24, 16:24] = 4  # one confident class: the global tag relabels the uncertain band to 4
    return roi


def test_single_class_image_draws_every_patch_among_uncertain_pixels():
    """The official order: centres are drawn among the uncertain pixels *before* they are
    relabelled to the image's single class (the old offline path drew them after, found none,
    and fell back to any interior pixel)."""
    roi, size = _single_class_roi(), 8
    gtag, rows = tag_image(roi, 10, size, 0.2, "index_sum")
    assert gtag == 4 and rows.shape == (10, 5)
    m = size // 2
    assert all(roi[y0 + m, x0 + m] == UNCERTAIN for y0, x0, *_ in rows)
    assert (rows[:, 2] - rows[:, 0] == size).all() and (rows[:, 3] - rows[:, 1] == size).all()
    assert rows[:, :2].max() <= 40 - size - 1  # top-left positions up to h - size - 1, as the official
    assert set(rows[:, 4].tolist()) <= {0, 4}  # after relabelling a patch holds class 4 only


def test_tag_image_is_the_online_assign_tags():
    roi = _single_class_roi()
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    gtag, rows = tag_image(roi, 6, 8, 0.2, "count", generator=gen_a)
    pos, tags = assign_tags(torch.from_numpy(roi)[None], 6, 8, 0.2, "count", 1, gen_b)
    assert gtag == int(tags[0, 0]) and rows[:, :2].tolist() == pos[0].tolist()
    assert rows[:, 4].tolist() == tags[0, 2:].tolist()
    # fixed_seed (generator None): positions depend only on the candidates, so a rerun is identical
    assert np.array_equal(tag_image(roi, 6, 8, 0.2, "count")[1], tag_image(roi, 6, 8, 0.2, "count")[1])


def test_background_rule_on_the_same_patch():
    sparse = np.zeros((20, 20), np.int64)
    sparse[5:7, 5:15] = 9  # 20 pixels of class 9 in the centre region
    _, count = tag_image(sparse, 4, 10, 0.2, "count")
    _, official = tag_image(sparse, 4, 10, 0.2, "index_sum")
    # The same positions; index_sum sums class indices (9 per pixel), so it never tags more background.
    assert np.array_equal(count[:, :4], official[:, :4])
    assert ((official[:, 4] == 0) <= (count[:, 4] == 0)).all()


def test_tag_correct():
    gt = np.zeros((10, 10), np.uint8)
    gt[:6] = 3
    assert tag_correct(gt, 3) is True and tag_correct(gt, 5) is False
    assert tag_correct(gt, 0) is False  # 60 % foreground
    gt[:] = 0
    gt[0, :] = 7
    assert tag_correct(gt, 0) is True  # 10 % foreground
    assert tag_correct(gt, UNCERTAIN) is None
