"""CAM seeds -> IRN dual-threshold labels (the source masks of CSD and the export_masks stage)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.irn.cams import dual_threshold_labels


def test_dual_threshold_regions_follow_irn():
    scores = np.zeros((2, 2, 4), np.float32)
    scores[0] = [[0.9, 0.31, 0.30, 0.05], [0.0, 0.2, 0.06, 0.5]]
    scores[1] = [[0.1, 0.0, 0.0, 0.0], [0.04, 0.1, 0.0, 0.7]]
    labels = dual_threshold_labels(scores, [3, 7], 0.30, 0.05)
    assert labels.dtype == np.uint8 and labels.shape == (2, 4)
    # > fg -> argmax class; == fg is not foreground (IRN's bg plane wins ties); <= bg -> 0; else 255
    np.testing.assert_array_equal(labels, [[3, 3, 255, 0], [0, 255, 255, 7]])


def test_dual_threshold_float16_and_no_classes():
    scores = np.array([[[0.5, 0.2, 0.01]]], np.float16)
    np.testing.assert_array_equal(dual_threshold_labels(scores, [1], 0.3, 0.05), [[1, 255, 0]])
    empty = dual_threshold_labels(np.zeros((0, 3, 5), np.float32), [], 0.3, 0.05)
    assert empty.shape == (3, 5) and not empty.any()


def test_dual_threshold_rejects_bad_arguments():
    with pytest.raises(ValueError, match="bg_threshold"):
        dual_threshold_labels(np.zeros((1, 2, 2)), [1], 0.05, 0.3)
    with pytest.raises(ValueError, match="planes"):
        dual_threshold_labels(np.zeros((2, 2, 2)), [1], 0.3, 0.05)
