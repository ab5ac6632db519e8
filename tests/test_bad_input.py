"""Bad input: one clear error naming the file or config key, non-zero exit, no partial output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline.data.palette import read_index_png, write_index_png
from pipeline.stages.index_dataset import main as index_main
from pipeline.stages.make_synthetic import main as synth_main
from tests.conftest import REPO, tool_env, workdir


def _copy(tiny_synthetic, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_synthetic, root)
    return root


def _index(root, out, capsys, kind="synthetic"):
    cfg = {"dataset": {"kind": kind, "root": str(root), "splits": {"train": "train", "val": "val"}}}
    with pytest.raises(SystemExit) as exc:
        index_main(["--cfg", json.dumps(cfg), "--out", str(out)])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists() and not list(out.parent.glob(".index*"))
    return err[0]


def _first(root, split="train"):
    return (root / "ImageSets/Segmentation" / f"{split}.txt").read_text().split()[0]


def test_corrupt_jpeg(tiny_synthetic, tmp_path, capsys):
    root = _copy(tiny_synthetic, tmp_path)
    bad = root / "JPEGImages" / f"{_first(root)}.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    assert str(bad) in _index(root, tmp_path / "out/index.json", capsys)


def test_mask_class_out_of_range(tiny_synthetic, tmp_path, capsys):
    root = _copy(tiny_synthetic, tmp_path)
    path = root / "SegmentationClassAug" / f"{_first(root, 'val')}.png"
    mask = read_index_png(path)
    mask[0, 0] = 42
    write_index_png(path, mask)
    msg = _index(root, tmp_path / "out/index.json", capsys)
    assert str(path) in msg and "42" in msg


def test_split_list_names_missing_file(tiny_synthetic, tmp_path, capsys):
    root = _copy(tiny_synthetic, tmp_path)
    with open(root / "ImageSets/Segmentation/train.txt", "a") as f:
        f.write("ghost_image\n")
    msg = _index(root, tmp_path / "out/index.json", capsys)
    assert "ghost_image.jpg" in msg and "missing" in msg


def test_mask_size_differs_from_image(tiny_synthetic, tmp_path, capsys):
    root = _copy(tiny_synthetic, tmp_path)
    path = root / "SegmentationClassAug" / f"{_first(root)}.png"
    write_index_png(path, np.zeros((7, 9), np.uint8))
    msg = _index(root, tmp_path / "out/index.json", capsys)
    assert str(path) in msg and "differs" in msg


def test_unknown_dataset_kind_in_stage(tiny_synthetic, tmp_path, capsys):
    msg = _index(tiny_synthetic, tmp_path / "out/index.json", capsys, kind="pascal")
    assert "dataset.kind" in msg


def test_negative_size_in_stage(tmp_path, capsys):
    out = tmp_path / "data"
    with pytest.raises(SystemExit):
        synth_main(["--cfg", json.dumps({"synthetic": {"min_size": -4}}), "--out", str(out)])
    assert "synthetic.min_size" in capsys.readouterr().err
    assert not out.exists()


def test_stage_exits_nonzero_as_a_process(tiny_synthetic, tmp_path):
    cfg = {"dataset": {"kind": "synthetic", "root": str(tmp_path / "nowhere"), "splits": {"train": "train"}}}
    out = tmp_path / "index.json"
    p = subprocess.run([sys.executable, "-m", "pipeline.stages.index_dataset", "--cfg", json.dumps(cfg), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "synthetic.json" in p.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"dataset": {"kind": "pascal", "root": "x", "splits": {"train": "a", "eval": "a", "val": "b"}}}, "kind"),
        ({"synthetic": {"num_train": -5}}, "num_train"),
    ],
)
def test_invalid_config_fails_when_dag_is_built(tmp_path, override, key):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(json.dumps(override))
    p = subprocess.run(["snakemake", "-n", "--configfile", str(cfg), "--directory", str(workdir(tmp_path))],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode != 0
    assert key in p.stdout + p.stderr
