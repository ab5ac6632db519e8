"""Dense CRF: boundaries snap to image edges; IRN's dual-threshold recipe; sharding changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data import open_dataset
from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactReader
from pipeline.irn.cams import dual_threshold_labels, scores_to_label
from pipeline.masks.crf import CRFParams, combine_dual, crf_labels, crf_softmax, irn_dual_label
from pipeline.stages.crf import main as crf_main
from pipeline.stages.crf import parse_shard, shard_ids
from pipeline.stages.gather_shards import main as gather_main
from tests.masks_helpers import default_sections, tiny_cfg, write_fake_cams, write_index

PRESETS = default_sections("crf")["crf"]["presets"]
EDGE = 30  # true object boundary (column) of the two-region image


def two_regions(h: int = 40, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark left region and a bright right one (plus mild pixel noise); the GT label map."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40.0)
    img[:, EDGE:] = 210.0
    img += rng.normal(0, 4, img.shape)
    gt = np.zeros((h, w), np.int64)
    gt[:, EDGE:] = 1
    return np.clip(img, 0, 255).astype(np.uint8), gt


def boundary_columns(label: np.ndarray) -> np.ndarray:
    """Per row, the first column labelled 1 (the predicted boundary)."""
    return np.argmax(label == 1, axis=1)


def test_softmax_crf_moves_a_shifted_noisy_boundary_onto_the_edge():
    img, gt = two_regions()
    rng = np.random.default_rng(1)
    cols = np.arange(img.shape[1])[None, :].repeat(img.shape[0], 0)
    # The unary puts the boundary 8 px too far left, is soft, and noisy.
    p1 = 1 / (1 + np.exp(-(cols - (EDGE - 8)) / 3.0)) + rng.normal(0, 0.15, cols.shape)
    p1 = np.clip(p1, 0.02, 0.98)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    before = probs.argmax(0)
    assert np.abs(boundary_columns(before) - EDGE).mean() > 5
    params = CRFParams.from_config(PRESETS["seco"], "crf.presets.seco")
    after = crf_softmax(img, probs, params).argmax(0)
    assert (after == gt).mean() > 0.97 > (before == gt).mean()
    assert np.abs(boundary_columns(after) - EDGE).mean() < 1.5


def test_label_crf_moves_the_boundary_and_cleans_salt_noise():
    img, gt = two_regions(seed=2)
    rng = np.random.default_rng(3)
    labels = np.zeros_like(gt)
    labels[:, EDGE - 6 :] = 1  # boundary 6 px too far left
    flip = rng.random(labels.shape) < 0.08
    labels[flip] = 1 - labels[flip]
    params = CRFParams.from_config(PRESETS["irn_label"], "crf.presets.irn_label")
    after = crf_labels(img, labels, 2, params)
    assert (after == gt).mean() > 0.97 > (labels == gt).mean()


def test_crf_keeps_a_single_label_image_uniform():
    img, _ = two_regions()
    params = CRFParams.from_config(PRESETS["irn_label"], "k")
    assert not crf_labels(img, np.zeros(img.shape[:2], np.int64), 1, params).any()


def test_dual_combination_matches_the_thresholding_without_crf():
    rng = np.random.default_rng(0)
    scores = rng.random((3, 20, 24)).astype(np.float32) ** 3
    classes = [2, 5, 7]
    fg, bg = scores_to_label(scores, classes, 0.30), scores_to_label(scores, classes, 0.05)
    assert np.array_equal(combine_dual(fg, bg), dual_threshold_labels(scores, classes, 0.30, 0.05))


def test_irn_dual_label_is_uncertain_between_thresholds():
    img, gt = two_regions()
    # class 3's CAM: strong on the right region, weak (between the thresholds) on a left band
    # that has its own colour (a flat band would be merged into the background by the CRF).
    img[:, 5:15] = 125
    cam = np.where(gt == 1, 0.9, 0.0).astype(np.float32)
    cam[:, 5:15] = 0.15
    params = CRFParams.from_config(PRESETS["irn_label"], "k")
    out = irn_dual_label(img, cam[None], [3], 0.30, 0.05, params)
    assert set(np.unique(out)) <= {0, 3, 255}
    assert (out[:, EDGE + 2 :] == 3).mean() > 0.95
    assert (out[:, 5:15] == 255).mean() > 0.5
    with pytest.raises(PipelineError, match="unary: labels"):
        irn_dual_label(img, cam[None], [3], 0.30, 0.05, CRFParams.from_config(PRESETS["seco"], "k"))


def test_crf_params_errors_name_the_config_key():
    with pytest.raises(PipelineError, match="crf.presets.x.unary"):
        CRFParams.from_config({**PRESETS["seco"], "unary": "bogus"}, "crf.presets.x")
    with pytest.raises(PipelineError, match="crf.presets.y: missing bi_sxy"):
        CRFParams.from_config({k: v for k, v in PRESETS["seco"].items() if k != "bi_sxy"}, "crf.presets.y")


def test_shards_partition_the_images():
    ids = [f"i{k}" for k in range(11)]
    parts = [shard_ids(ids, (i, 3)) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(parts)
    assert parse_shard("2-of-3") == (2, 3)
    for bad in ("0-of-3", "4-of-3", "x"):
        with pytest.raises(PipelineError):
            parse_shard(bad)


def test_sharded_crf_equals_unsharded(tiny_synthetic, tmp_path):
    cfg = tiny_cfg(tiny_synthetic)
    cfg.update(default_sections("masks", "crf"))
    index = write_index(cfg, tmp_path / "index.json")
    ds = open_dataset(cfg["dataset"])
    ids = index["splits"]["train"]["ids"][:12]
    index["splits"]["train"]["ids"] = index["splits"]["eval"]["ids"] = ids
    (tmp_path / "index.json").write_text(json.dumps(index))
    write_fake_cams(tmp_path / "cams.h5", ds, ids)
    common = ["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--target", "masks",
              "--method", "baseline", "--source", str(tmp_path / "cams.h5")]
    crf_main([*common, "--out", str(tmp_path / "whole.h5")])
    shards = []
    for i in (1, 2, 3):
        shards.append(str(tmp_path / f"s{i}.h5"))
        # the middle shard on two worker processes: same result as in-process
        crf_main([*common, "--shard", f"{i}-of-3", "--processes", "2" if i == 2 else "1", "--out", shards[-1]])
    gather_main(["--cfg", "{}", "--shards", *shards, "--out", str(tmp_path / "joined.h5")])
    whole, joined = ArtifactReader(tmp_path / "whole.h5", expect="mask"), ArtifactReader(tmp_path / "joined.h5")
    assert sorted(whole.ids()) == sorted(joined.ids()) == sorted(ids)
    for image_id in ids:
        assert np.array_equal(whole.mask(image_id), joined.mask(image_id)), image_id
    values = np.unique(np.concatenate([whole.mask(i).ravel() for i in ids]))
    assert 255 in values and 0 in values and len(values) > 2
