"""PASCAL VOC 2012 (+ SBD SegmentationClassAug) reader; also reads the synthetic dataset."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pipeline.data.base import SegDataset, read_split_list
from pipeline.errors import PipelineError

VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
# Official split sizes, checked by `index_dataset` when the split name is a standard one.
VOC_SPLIT_SIZES = {"train_aug": 10582, "train": 1464, "val": 1449, "test": 1456}


class VOCDataset(SegDataset):
    """`root` is the VOC2012 folder: JPEGImages/, SegmentationClassAug/ or SegmentationClass/,
    Annotations/ (for label-only splits such as test) and split lists.

    Split lists are looked up in `split_dir` (IRN/ToCo ship train_aug.txt etc. outside the VOC
    tree) and then in `ImageSets/Segmentation/`.
    """

    kind = "voc"

    def __init__(self, root: str | os.PathLike, split_dir: str | os.PathLike | None = None,
                 class_names: list[str] | None = None) -> None:
        super().__init__(root, class_names or VOC_CLASSES)
        self.split_dirs = [Path(split_dir)] if split_dir else []
        self.split_dirs.append(self.root / "ImageSets" / "Segmentation")
        aug = self.root / "SegmentationClassAug"
        self.mask_dir = aug if aug.is_dir() else self.root / "SegmentationClass"
        self._masks = {p.stem for p in self.mask_dir.glob("*.png")} if self.mask_dir.is_dir() else set()

    def split_path(self, split: str) -> Path:
        for d in self.split_dirs:
            if (d / f"{split}.txt").is_file():
                return d / f"{split}.txt"
        tried = ", ".join(str(d / f"{split}.txt") for d in self.split_dirs)
        raise PipelineError(f"split list for '{split}' not found (tried {tried})")

    def ids(self, split: str) -> list[str]:
        return read_split_list(self.split_path(split))

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path | None:
        # A split without masks (VOC test) takes its labels from Annotations/*.xml instead.
        if image_id in self._masks or not (self.root / "Annotations" / f"{image_id}.xml").is_file():
            return self.mask_dir / f"{image_id}.png"
        return None

    def labels_from_annotation(self, image_id: str) -> np.ndarray:
        path = self.root / "Annotations" / f"{image_id}.xml"
        try:
            tree = ET.parse(path)
        except (OSError, ET.ParseError) as exc:
            raise PipelineError(f"{path}: cannot parse annotation ({exc})") from exc
        vec = np.zeros(self.num_classes - 1, np.float32)
        for obj in tree.getroot().iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in self.class_names[1:]:
                raise PipelineError(f"{path}: unknown class name {name!r}")
            vec[self.class_names.index(name) - 1] = 1
        return vec


class SyntheticDataset(VOCDataset):
    """The generated co-occurrence dataset: VOC layout + synthetic.json + ContextMaps/."""

    kind = "synthetic"

    def __init__(self, root: str | os.PathLike, split_dir: str | os.PathLike | None = None) -> None:
        meta_path = Path(root) / "synthetic.json"
        if not meta_path.is_file():
            raise PipelineError(f"{meta_path}: missing; is dataset.root a generated synthetic dataset?")
        self.meta = json.loads(meta_path.read_text())
        super().__init__(root, split_dir, class_names=self.meta["class_names"])
        self.context_to_class = {int(k): int(v) for k, v in self.meta["context_to_class"].items()}

    def context_map(self, image_id: str) -> np.ndarray:
        from pipeline.data.palette import read_index_png

        return read_index_png(self.root / "ContextMaps" / f"{image_id}.png")
