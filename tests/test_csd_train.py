"""The train_csd stage end to end on tiny data: model format, resume, determinism, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pipeline.data import open_dataset
from pipeline.io.h5store import ArtifactWriter
from pipeline.irn.train import build_cam_net
from pipeline.runtime.checkpoint import load_final
from pipeline.stages.index_dataset import main as index_main
from pipeline.stages.train_cam import main as train_cam_main
from pipeline.stages.train_csd import main as train_csd_main
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def setup(tiny_synthetic, tmp_path_factory):
    """Index + round-1 CAM scores (stride-4 one-hot planes of the GT) for the tiny dataset."""
    work = tmp_path_factory.mktemp("csd")
    cfg = tiny_config()
    cfg["dataset"].update(root=str(tiny_synthetic), splits={"train": "train", "eval": "train", "val": "val"})
    cfg["cam"].update(epochs=1, batch_size=8, ckpt_every=2, frozen_bn=True)
    index = work / "index.json"
    index_main(["--cfg", json.dumps({"dataset": cfg["dataset"]}), "--out", str(index)])
    ds = open_dataset(cfg["dataset"])
    cams = work / "cams.h5"
    ids = json.loads(index.read_text())["splits"]["train"]["ids"]
    with ArtifactWriter(cams, "scores", ds.class_names, {}) as w:
        for i in ids:
            gt = ds.mask(i)
            classes = ds.present_classes(i)
            planes = np.stack([(gt == c)[::4, ::4] for c in classes]).astype(np.float32)
            w.write_scores(i, planes, classes, gt.shape, stride=4)
    return work, cfg, index, cams, ids


def _run(cfg, index, masks, out_dir):
    train_csd_main(["--cfg", json.dumps(cfg), "--index", str(index), "--source-masks", str(masks),
                    "--out", str(out_dir / "model_final.pth"), "--ckpt-dir", str(out_dir / "runs"),
                    "--metrics", str(out_dir / "metrics.csv"), "--threads", "2"])


def test_train_csd_writes_a_cam_model_and_resumes_bit_identically(setup):
    work, cfg, index, cams, _ = setup
    a = work / "a"
    _run(cfg, index, cams, a)
    state, meta = load_final(a / "model_final.pth")
    net = build_cam_net(cfg["cam"], meta["num_classes"])
    net.load_state_dict(state)  # the format make_cam reads, as train_cam writes it
    assert meta["iterations"] == 40 // 8 and meta["csd"]["paste_batch"] == 4
    lines = (a / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert {"loss", "cls", "fg", "bg", "fg_cells", "bg_cells"} <= set(header)
    assert len(lines) == 1 + 5 and any(float(r.split(",")[header.index("bg_cells")]) > 0 for r in lines[1:])

    # A run killed after iteration 3 (checkpoints after 1, 3 and 4): resume from that checkpoint.
    b = work / "b"
    (b / "runs").mkdir(parents=True)
    shutil.copy(a / "runs/prev.pth", b / "runs/last.pth")
    _run(cfg, index, cams, b)
    resumed, _ = load_final(b / "model_final.pth")
    assert all(torch.equal(state[k], resumed[k]) for k in state)


def test_zero_lambdas_reproduce_the_baseline_classifier(setup):
    """Same init and classification stream as train_cam: with lambda_fg = lambda_bg = 0 CSD gives
    the baseline's weights bit for bit (BN frozen, so pasted passes leave no statistics), and
    with the default lambdas it does not."""
    work, cfg, index, cams, _ = setup
    train_cam_main(["--cfg", json.dumps(cfg), "--index", str(index), "--threads", "2",
                    "--out", str(work / "cam/model_final.pth"), "--ckpt-dir", str(work / "cam/runs"),
                    "--metrics", str(work / "cam/metrics.csv")])
    baseline, _ = load_final(work / "cam/model_final.pth")
    _run({**cfg, "csd": {**cfg["csd"], "lambda_fg": 0.0, "lambda_bg": 0.0}}, index, cams, work / "zero")
    zero, _ = load_final(work / "zero/model_final.pth")
    assert all(torch.equal(baseline[k], zero[k]) for k in baseline)
    if not (work / "a/model_final.pth").exists():
        _run(cfg, index, cams, work / "a")
    with_csd, _ = load_final(work / "a/model_final.pth")
    assert any(not torch.equal(baseline[k], with_csd[k]) for k in baseline)


def test_bad_inputs_name_the_file_or_key(setup, tmp_path, capsys):
    work, cfg, index, cams, ids = setup
    partial = tmp_path / "partial.h5"
    ds = open_dataset(cfg["dataset"])
    with ArtifactWriter(partial, "mask", ds.class_names, {}) as w:
        w.write_mask(ids[0], ds.mask(ids[0]))
    bad_kind = {**cfg, "csd": {**cfg["csd"], "source_masks": "crf_masks"}}
    for conf, masks, needle in ((bad_kind, partial, "partial.h5"),
                                (bad_kind, cams, "expected 'mask'")):
        with pytest.raises(SystemExit) as exc:
            _run(conf, index, masks, tmp_path / "out")
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err
        assert not (tmp_path / "out/model_final.pth").exists()
