"""SeCo's "separate" step: ROI mask, online patch tags and positions, crops, offline box mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.seco.par import PAR
from pipeline.seco.pseudo import cam_to_label, refine_with_background, roi_mask
from pipeline.seco.tagging import assign_tags, crops_from_boxes, cut_crops, map_boxes


def test_roi_mask_and_cam_to_label():
    cam = torch.tensor([[[[0.9, 0.5, 0.1, 0.8]]], [[[0.1, 0.6, 0.9, 0.95]]]]).reshape(1, 2, 1, 4)
    labels = torch.tensor([[1.0, 0.0]])  # class 2 absent: its CAM is masked out
    assert roi_mask(cam, labels, 0.7, 0.25).tolist() == [[[1, -1, 0, 1]]]
    valid, lab = cam_to_label(cam, labels, 0.7, 0.25, boxes=[(0, 1, 1, 4)])
    assert lab.tolist() == [[[255, 255, 0, 1]]]  # column 0 lies outside the valid box
    assert valid[0, 1].abs().sum() == 0


def _roi_two_classes():
    roi = torch.zeros(1, 12, 12, dtype=torch.long)
    roi[0, :6, :6] = 1
    roi[0, 6:, 6:] = 3
    roi[0, 5:7, :] = -1  # an uncertain band
    return roi


def test_global_and_local_tags():
    roi = _roi_two_classes()
    pos, tags = assign_tags(roi, 4, 4, threshold=0.2)
    assert tags[0, :2].tolist() == [-1, -1]  # two confident classes: co-occurrence
    for k, (y, x) in enumerate(pos[0].tolist()):
        assert roi[0, y + 2, x + 2] == -1  # centred on an uncertain pixel
        patch = roi[0, y : y + 4, x : x + 4]
        present = {int(c) for c in patch.unique() if c > 0}
        assert tags[0, k + 2] == (present.pop() if len(present) == 1 else -1)
    # one confident class: the global tag is it, and uncertain pixels join it
    single = torch.full((1, 12, 12), -1, dtype=torch.long)
    single[0, :3, :3] = 2
    single[0, 8:, :] = 0
    _, t1 = assign_tags(single, 3, 4)
    assert t1[0, :2].tolist() == [2, 2] and set(t1[0, 2:].tolist()) == {2}
    # no confident class: the official initial value 1, or -1 with the correction
    empty = torch.zeros(1, 12, 12, dtype=torch.long)
    assert assign_tags(empty, 2, 4)[1][0].tolist() == [1, 1, 0, 0]
    assert assign_tags(empty, 2, 4, empty_global_tag=-1)[1][0, :2].tolist() == [-1, -1]


def test_background_rule_index_sum_vs_count():
    roi = torch.zeros(1, 9, 9, dtype=torch.long)
    roi[0, 0:4, 0:7] = -1  # 28 uncertain pixels in the 8x8 patch
    roi[0, 4, 0:4] = 9  # 4 confident pixels of class 9: count 32/64 = 0.5, index sum 64/64 = 1
    pos = torch.zeros(1, 1, 2, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    for rule, threshold, expected in (("count", 0.6, 0), ("index_sum", 0.6, 9), ("count", 0.5, 0), ("index_sum", 1.0, 0)):
        p, t = assign_tags(roi, 1, 8, threshold=threshold, bg_rule=rule, generator=gen)
        assert torch.equal(p, pos)  # the only position where an 8x8 crop fits a 9x9 map with margin 4
        assert t[0, 2].item() == expected, (rule, threshold)


def test_fixed_seed_positions_depend_only_on_candidates():
    roi = _roi_two_classes().repeat(2, 1, 1)
    p1, _ = assign_tags(roi, 4, 4)
    p2, _ = assign_tags(roi, 4, 4)
    assert torch.equal(p1, p2) and torch.equal(p1[0], p1[1])  # reseeded with 0 per image
    expected = torch.nonzero(roi[0, 2:10, 2:10] < 0)[torch.randperm(16, generator=torch.Generator().manual_seed(0))[:4]]
    assert torch.equal(p1[0], expected)
    gen = torch.Generator().manual_seed(123)
    p3, _ = assign_tags(roi, 4, 4, generator=gen)
    assert not torch.equal(p3[0], p3[1]) or not torch.equal(p3[0], p1[0])


def test_cut_crops_and_box_crops_are_crop_major():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    pos = torch.tensor([[[0, 0], [4, 4]], [[2, 1], [0, 4]]])
    crops = cut_crops(images, pos, 4)
    assert crops.shape == (4, 3, 4, 4)
    assert torch.equal(crops[1], images[1, :, 2:6, 1:5])  # crop 0 of image 1
    assert torch.equal(crops[2], images[0, :, 4:8, 4:8])  # crop 1 of image 0
    boxes = pos.float().repeat(1, 1, 2) + torch.tensor([0.0, 0.0, 4.0, 4.0])
    assert torch.allclose(crops_from_boxes(images, boxes, 4), crops, atol=1e-4)
    # a box twice the output size is sampled between pixel pairs
    big = crops_from_boxes(images, torch.tensor([[[0.0, 0.0, 8.0, 8.0]], [[0.0, 0.0, 8.0, 8.0]]]), 4)
    assert big[0, 0, 0, 0].item() == pytest.approx(images[0, 0, :2, :2].mean().item())


def test_offline_boxes_follow_rescale_flip_and_crop():
    rows = np.array([[10, 20, 26, 36, 3], [0, 0, 16, 16, 0]])
    boxes, tags = map_boxes(rows, (0.5, 0.5), None, (5, -5), crop=24)
    assert boxes[0].tolist() == [10.0, 5.0, 18.0, 13.0] and tags.tolist() == [3, -1]
    # the second patch is (5, -5)..(13, 3): 3/8 inside -> ignored, clipped box kept
    assert boxes[1].tolist() == [5.0, 0.0, 13.0, 3.0]
    _, half = map_boxes(rows[1:], (0.5, 0.5), None, (5, -4), crop=24)
    assert half.tolist() == [0]  # exactly half inside is kept
    flipped, _ = map_boxes(rows[:1], (1.0, 1.0), 50.0, (0, 0), crop=64)
    assert flipped[0].tolist() == [10.0, 14.0, 26.0, 30.0]  # x in [20, 36) -> [50 - 36, 50 - 20)
    gone, t = map_boxes(rows[:1], (1.0, 1.0), None, (100, 100), crop=64)
    assert t.tolist() == [-1] and gone[0].tolist() == [0.0, 0.0, 64.0, 64.0]


def test_refined_pseudo_labels_dual_threshold():
    # Left half: strong class-1 CAM; right half: weak; image with an edge in the middle.
    img = torch.zeros(1, 3, 16, 16)
    img[..., 8:] = 1.0
    cam = torch.zeros(1, 2, 16, 16)
    cam[0, 0, :, :8] = 1.0
    cam[0, 0, :, 8:] = 0.5  # between the 0.25 and 0.7 backgrounds: uncertain
    label = refine_with_background(PAR((1, 2), 5), img, cam, torch.tensor([[1.0, 0.0]]), 0.7, 0.25,
                                   boxes=[(0, 0, 16, 16)])
    assert (label[0, :, :8] == 1).all() and (label[0, :, 8:] == 255).all()
    cam[0, 0, :, 8:] = 0.0  # background under both thresholds
    label = refine_with_background(PAR((1, 2), 5), img, cam, torch.tensor([[1.0, 0.0]]), 0.7, 0.25,
                                   boxes=[(0, 0, 16, 12)])
    assert (label[0, :, :8] == 1).all() and (label[0, :, 8:12] == 0).all() and (label[0, :, 12:] == 255).all()
