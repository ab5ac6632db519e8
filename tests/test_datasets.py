"""Dataset readers: VOC (+SBD), COCO in both folder conventions, synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import COCO_CLASSES, VOC_CLASSES, open_dataset
from pipeline.data.palette import write_index_png
from pipeline.errors import PipelineError


def _img(path: Path, h: int = 20, w: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, classes: list[int], h: int = 20, w: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    for i, c in enumerate(classes):
        m[2 + i * 4 : 5 + i * 4, 2:8] = c
    m[0, :] = 255
    write_index_png(path, m)


def make_voc(root: Path, mask_dir: str = "SegmentationClassAug") -> Path:
    voc = root / "VOC2012"
    _img(voc / "JPEGImages/a.jpg")
    _mask(voc / mask_dir / "a.png", [15, 13])
    _img(voc / "JPEGImages/b.jpg")
    _mask(voc / mask_dir / "b.png", [4])
    _img(voc / "JPEGImages/t.jpg")
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations/t.xml").write_text(
        "<annotation><object><name>dog</name></object><object><name>person</name></object></annotation>"
    )
    lists = voc / "ImageSets/Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("a\nb\n")
    (lists / "test.txt").write_text("t\n")
    return voc


@pytest.mark.parametrize("mask_dir", ["SegmentationClassAug", "SegmentationClass"])
def test_voc_reader(tmp_path, mask_dir):
    voc = make_voc(tmp_path, mask_dir)
    ds = open_dataset({"kind": "voc", "root": str(voc)})
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 21
    assert ds.ids("train") == ["a", "b"]
    assert ds.image("a").shape == (20, 30, 3) and ds.image("a").dtype == np.uint8
    assert ds.mask("a").shape == (20, 30)
    assert list(np.flatnonzero(ds.labels("a")) + 1) == [13, 15]  # 255 and 0 ignored
    # test split: no masks, labels from Annotations/*.xml
    assert ds.mask("t") is None
    assert list(np.flatnonzero(ds.labels("t")) + 1) == [12, 15]


def test_voc_split_dir_override(tmp_path):
    voc = make_voc(tmp_path)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_aug.txt").write_text("/JPEGImages/b.jpg /SegmentationClassAug/b.png\n")
    ds = open_dataset({"kind": "voc", "root": str(voc), "split_dir": str(lists)})
    assert ds.ids("train_aug") == ["b"]
    with pytest.raises(PipelineError, match="split list for 'nope'"):
        ds.ids("nope")


@pytest.mark.parametrize("convention", ["2014", "short"])
def test_coco_reader_both_conventions(tmp_path, convention):
    root = tmp_path / "COCO"
    ids = ["COCO_train2014_000000000009", "COCO_val2014_000000000042"]
    for image_id in ids:
        sub = "train" if "train" in image_id else "val"
        folder = f"{sub}2014" if convention == "2014" else sub
        name = image_id if convention == "2014" else image_id.split("_")[-1]
        _img(root / "JPEGImages" / folder / f"{image_id}.jpg")
        _mask(root / "SegmentationClass" / folder / f"{name}.png", [1, 80])
    (root / "ImageSets").mkdir()
    (root / "ImageSets/train.txt").write_text(ids[0] + "\n")
    (root / "ImageSets/val.txt").write_text(ids[1] + "\n")
    ds = open_dataset({"kind": "coco", "root": str(root)})
    assert ds.num_classes == 81 == len(COCO_CLASSES)
    for split, image_id in zip(["train", "val"], ids, strict=True):
        assert ds.ids(split) == [image_id]
        assert ds.image(image_id).shape == (20, 30, 3)
        assert list(np.flatnonzero(ds.labels(image_id)) + 1) == [1, 80]


def test_coco_grayscale_image_becomes_rgb(tmp_path):
    root = tmp_path / "COCO"
    image_id = "COCO_train2014_000000000001"
    (root / "JPEGImages/train2014").mkdir(parents=True)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / f"JPEGImages/train2014/{image_id}.jpg")
    ds = open_dataset({"kind": "coco", "root": str(root)})
    assert ds.image(image_id).shape == (10, 12, 3)


def test_synthetic_reader(tiny_synthetic):
    ds = open_dataset({"kind": "synthetic", "root": str(tiny_synthetic)})
    assert ds.class_names[0] == "background" and ds.num_classes == 11
    image_id = ds.ids("train")[0]
    assert ds.context_map(image_id).shape == ds.mask(image_id).shape
    assert ds.ids("decoupled")


def test_label_cache_skips_mask_decoding(tiny_synthetic):
    ds = open_dataset({"kind": "synthetic", "root": str(tiny_synthetic)})
    ds.set_label_cache({"virtual": [2, 5]})
    assert list(np.flatnonzero(ds.labels("virtual")) + 1) == [2, 5]
