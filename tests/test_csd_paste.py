"""CSD copy-paste: foreground paste (label union) and background paste (target kept)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.csd.cooccurrence import PasteClassSampler
from pipeline.csd.masks import RoundOneMasks
from pipeline.csd.paste import (
    PastePairDataset,
    paste_background,
    paste_foreground,
    paste_pair,
    source_background,
)
from pipeline.data import open_dataset
from pipeline.data.index import build_index
from pipeline.io.h5store import ArtifactWriter


def _images():
    target = np.zeros((4, 4, 3), np.float32)
    source = np.ones((4, 4, 3), np.float32)
    # target: class 2 on the left column, background elsewhere, one uncertain pixel
    t_mask = np.zeros((4, 4), np.uint8)
    t_mask[:, 0] = 2
    t_mask[3, 3] = 255
    # source: class 5 in the top-right 2x2 block, uncertain band below it, the rest background
    s_mask = np.zeros((4, 4), np.uint8)
    s_mask[:2, 2:] = 5
    s_mask[2, 2:] = 255
    return target, t_mask, source, s_mask


def test_foreground_paste_overwrites_only_source_object():
    target, _, source, s_mask = _images()
    out = paste_foreground(target, source, s_mask == 5)
    np.testing.assert_array_equal(out[..., 0], (s_mask == 5).astype(np.float32))


def test_background_paste_needs_both_backgrounds():
    target, t_mask, source, s_mask = _images()
    s_bg = source_background(s_mask, 5, np.ones((4, 4), bool), "complement")
    out, region = paste_background(target, source, s_bg, t_mask == 0)
    np.testing.assert_array_equal(region, (s_mask != 5) & (t_mask == 0))
    np.testing.assert_array_equal(out[..., 0], region.astype(np.float32))
    assert not region[:, 0].any()  # the target's object survives


def test_source_background_rules_and_padding():
    _, _, _, s_mask = _images()
    valid = np.ones((4, 4), bool)
    valid[:, 3] = False  # crop padding
    comp = source_background(s_mask, 5, valid, "complement")
    conf = source_background(s_mask, 5, valid, "confident")
    assert comp[2, 2] and not conf[2, 2]  # the uncertain band: background only under `complement`
    assert not comp[:, 3].any() and not conf[:, 3].any()
    assert not comp[0, 2] and not conf[0, 2]
    with pytest.raises(ValueError):
        source_background(s_mask, 5, valid, "other")


def test_paste_pair_labels_agree_with_pasted_masks():
    target, t_mask, source, s_mask = _images()
    pair = paste_pair(target, t_mask, [2], source, s_mask, np.ones((4, 4), bool), 5, num_fg=6,
                      source_bg_rule="complement")
    # foreground paste: pasted mask = target mask with the source object; label = union
    fg_mask = pair["fg_mask"]
    assert set(np.unique(fg_mask)) - {0, 255} == {2, 5}
    np.testing.assert_array_equal(np.flatnonzero(pair["fg_label"]) + 1, [2, 5])
    np.testing.assert_array_equal(pair["fg_region"], s_mask == 5)
    np.testing.assert_array_equal(fg_mask[pair["fg_region"]], 5)
    # background paste: the target's label map is unchanged where the paste went (0 on 0)
    bg_mask = pair["bg_mask"]
    np.testing.assert_array_equal(bg_mask, t_mask)
    np.testing.assert_array_equal(np.flatnonzero(pair["bg_label"]) + 1, [2])
    assert (t_mask[pair["bg_region"]] == 0).all() and (s_mask[pair["bg_region"]] != 5).all()
    np.testing.assert_array_equal(pair["fg_image"][pair["fg_region"]], 1.0)
    np.testing.assert_array_equal(pair["bg_image"][~pair["bg_region"]], 0.0)
    assert pair["paste_class"] == 4


def test_paste_pair_dataset_on_synthetic_data(tiny_synthetic, tmp_path):
    ds = open_dataset({"kind": "synthetic", "root": str(tiny_synthetic)})
    index = build_index(ds, {"train": "train"})
    ids, labels = index["splits"]["train"]["ids"], index["splits"]["train"]["labels"]
    masks_path = tmp_path / "crf.h5"
    with ArtifactWriter(masks_path, "mask", ds.class_names, {}) as w:
        for i in ids:
            w.write_mask(i, ds.mask(i))  # ground truth as the round-1 masks
    masks = RoundOneMasks(masks_path, "crf_masks")
    sampler = PasteClassSampler(labels, ds.num_classes - 1, 0.1)
    pairs = PastePairDataset(ds, ids, labels, masks, sampler, 64, (56, 80))
    np.random.seed(0)
    for k in range(len(ids)):
        item = pairs[k]
        c = item["paste_class"]
        assert item["source_label"][c] == 1 and item["source_label"].sum() == 1
        assert item["fg_label"][c] == 1
        np.testing.assert_array_equal(np.maximum(item["bg_label"].numpy(), item["source_label"].numpy()),
                                      item["fg_label"].numpy())
        np.testing.assert_array_equal(item["bg_label"].numpy().nonzero()[0] + 1, labels[ids[k]])
        region = item["fg_region"].numpy()
        np.testing.assert_array_equal(item["fg_image"].numpy()[:, region], item["source"].numpy()[:, region])
        bg = item["bg_region"].numpy()
        np.testing.assert_array_equal(item["bg_image"].numpy()[:, bg], item["source"].numpy()[:, bg])
        assert not (region & bg).any()
        assert item["fg_image"].shape == (3, 64, 64) and region.shape == (64, 64)
    json.dumps(index)  # the index stays serialisable
