"""The SeCo stages on tiny generated data: train (online and offline tags, resume after a kill),
inference into the HDF5 store, and the segmentation evaluation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from pipeline.io.h5store import ArtifactReader, ArtifactWriter
from pipeline.runtime.checkpoint import load_final
from pipeline.seco.train import SeCoStep, poly_warmup
from pipeline.stages.eval_seco import main as eval_main
from pipeline.stages.index_dataset import main as index_main
from pipeline.stages.infer_seco import main as infer_main
from pipeline.stages.train_seco import main as train_main
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def setup(tiny_synthetic, tmp_path_factory):
    work = tmp_path_factory.mktemp("seco")
    cfg = tiny_config()
    cfg["dataset"]["root"] = str(tiny_synthetic)
    cfg["runtime"]["device"] = "cpu"
    index = work / "index.json"
    index_main(["--cfg", json.dumps({"dataset": cfg["dataset"]}), "--out", str(index)])
    return work, cfg, index


def _train(work, cfg, index, name, tags=None):
    d = work / name
    args = ["--cfg", json.dumps(cfg), "--index", str(index), "--threads", "1", "--out", str(d / "model.pth"),
            "--ckpt-dir", str(d / "run"), "--metrics", str(d / "metrics.csv")]
    train_main(args + (["--tags", str(tags)] if tags else []))
    return d


@pytest.fixture(scope="module")
def trained(setup):
    work, cfg, index = setup
    return _train(work, cfg, index, "online")


def test_poly_warmup_schedule():
    assert poly_warmup(0, 10, 1e-6, 100, 0.9) == pytest.approx(1e-6)
    assert poly_warmup(5, 10, 1e-6, 100, 0.9) == pytest.approx(0.5 + 0.5e-6)
    assert poly_warmup(10, 10, 1e-6, 100, 0.9) == pytest.approx(0.9**0.9)  # (1 - t/T), not from W


def test_training_runs_every_term_and_resumes_identically(setup, trained, monkeypatch):
    work, cfg, index = setup
    rows = list(csv.DictReader(open(trained / "metrics.csv")))
    assert len(rows) == 6
    assert rows[0]["lil"] == "" and rows[0]["seg"] == ""  # staged: contrast after 1, seg after 2
    for key in ("cls", "cls_aux", "ptc", "lil", "lig", "seg", "reg"):
        assert np.isfinite(float(rows[-1][key])), key
    state, meta = load_final(trained / "model.pth")
    assert meta["iterations"] == 6 and "encoder_k.vit.cls_token" in state and "queue" in state

    original = SeCoStep.__call__

    def killed(self, it):
        if it == 4:
            raise KeyboardInterrupt  # a kill after the checkpoint at iteration 3
        return original(self, it)

    monkeypatch.setattr(SeCoStep, "__call__", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(work, cfg, index, "resumed")
    monkeypatch.setattr(SeCoStep, "__call__", original)
    resumed = _train(work, cfg, index, "resumed")
    other, _ = load_final(resumed / "model.pth")
    assert all(torch.equal(state[k], other[k]) for k in state), "resume is not bit-identical"


def test_corrected_switches_train(setup):
    """Every quirk's corrected alternative runs (the defaults are covered above)."""
    work, cfg, index = setup
    quirks = {"contrast_form": "supcon", "tag_bg_rule": "count", "empty_global_tag": "uncertain",
              "crop_positions": "random", "strong_view_flip": False, "queue_init": "empty", "ptc_box": "scaled"}
    alt = {**cfg, "seco": {**cfg["seco"], "iterations": 4, "quirks": quirks, "weights": {**cfg["seco"]["weights"], "reg": 0.0}}}
    d = _train(work, alt, index, "corrected")
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert np.isfinite(float(rows[-1]["lil"])) and np.isfinite(float(rows[-1]["seg"]))
    assert "reg" not in rows[-1] or rows[-1]["reg"] == ""  # weight 0 switches L_reg off
    bad = {**cfg, "seco": {**cfg["seco"], "queue_size": 50}}
    with pytest.raises(SystemExit):  # 50 is not a multiple of 4 x 12 keys per step
        _train(work, bad, index, "bad_queue")


def test_offline_tags_training(setup, tmp_path):
    work, cfg, index = setup
    idx = json.loads(index.read_text())
    tags = tmp_path / "tags.h5"
    with ArtifactWriter(tags, "tags", idx["class_names"], {}) as w:
        for i, image_id in enumerate(idx["splits"]["train"]["ids"]):
            h, w_ = idx["splits"]["train"]["sizes"][image_id]
            rows = [[(3 * k) % (h - 12), (5 * k) % (w_ - 12), (3 * k) % (h - 12) + 12, (5 * k) % (w_ - 12) + 12, k % 3 - 1]
                    for k in range(10)]
            w.write_array(image_id, np.asarray(rows, np.int32), global_tag=(i % 3) - 1, patch_size=12)
    off = {**cfg, "seco": {**cfg["seco"], "tagging": "offline", "iterations": 3}}
    d = _train(work, off, index, "offline", tags=tags)
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert len(rows) == 3 and np.isfinite(float(rows[-1]["lil"]))
    with pytest.raises(SystemExit):  # offline without the tags file: one clear error
        _train(work, off, index, "offline_missing")


def test_inference_artifacts_and_evaluation(setup, trained):
    work, cfg, index = setup
    out = work / "infer"
    infer_main(["--cfg", json.dumps(cfg), "--index", str(index), "--threads", "1", "--model", str(trained / "model.pth"),
                "--cams", str(out / "cams.h5"), "--logits", str(out / "seg_logits.h5"),
                "--metrics", str(out / "infer.json")])
    idx = json.loads(index.read_text())
    train_ids, val_ids = idx["splits"]["train"]["ids"], idx["splits"]["val"]["ids"]
    cams = ArtifactReader(out / "cams.h5", expect="scores")
    assert sorted(cams.ids()) == sorted(train_ids)
    some = train_ids[0]
    attrs = cams.attrs(some)
    assert attrs["classes"].tolist() == idx["splits"]["train"]["labels"][some] and attrs["stride"] == 4
    scores, _ = cams.scores(some)
    assert scores.shape[1:] == tuple(idx["splits"]["train"]["sizes"][some])
    assert scores.min() >= 0 and scores.max() <= 1.0 + 1e-3
    logits = ArtifactReader(out / "seg_logits.h5", expect="logits")
    assert sorted(logits.ids()) == sorted(set(train_ids) | set(val_ids))
    raw = logits.raw(val_ids[0])
    assert raw.dtype == np.float16 and raw.shape[0] == len(idx["class_names"])
    assert logits.attrs(val_ids[0])["classes"].tolist() == list(range(len(idx["class_names"])))
    metrics = json.loads((out / "infer.json").read_text())
    # (<= 1 byte per pixel holds for the default data; 64 px images are dominated by HDF5 overhead)
    assert metrics["bytes_per_pixel"] == pytest.approx(metrics["logits_bytes"] / metrics["image_pixels"])
    assert set(metrics["val"]) == {"full_res_miou", "cache_miou", "cache_minus_full"}
    eval_main(["--cfg", json.dumps(cfg), "--index", str(index), "--logits", str(out / "seg_logits.h5"),
               "--infer-metrics", str(out / "infer.json"), "--summary", str(out / "eval.json"),
               "--classes", str(out / "classes.tsv")])
    summary = json.loads((out / "eval.json").read_text())
    assert 0 <= summary["val"]["miou"] <= 1 and "context_false_activation" in summary["eval"]
    assert summary["cache"]["val"]["cache_miou"] == pytest.approx(summary["val"]["miou"], abs=1e-9)
