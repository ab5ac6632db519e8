"""COCO 2014 as VOC-style index PNGs (0 background, 1..80, 255 ignore).

Two folder conventions are accepted:
  * ToCo:  JPEGImages/train2014/COCO_train2014_<n>.jpg, SegmentationClass/train2014/COCO_train2014_<n>.png
  * SeCo:  JPEGImages/train/COCO_train2014_<n>.jpg,     SegmentationClass/train/<n>.png (prefix stripped)
Ids in the split lists are full names (COCO_train2014_000000000009).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.data.base import SegDataset, read_split_list
from pipeline.errors import PipelineError

COCO_CLASSES: list[str] = ["background"] + (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
).split()
assert len(COCO_CLASSES) == 81


class COCODataset(SegDataset):
    kind = "coco"

    def __init__(self, root: str | os.PathLike, split_dir: str | os.PathLike | None = None) -> None:
        super().__init__(root, COCO_CLASSES)
        self.split_dirs = [Path(split_dir)] if split_dir else []
        self.split_dirs += [self.root / "ImageSets", self.root]
        if (self.root / "JPEGImages" / "train2014").is_dir() or (self.root / "JPEGImages" / "val2014").is_dir():
            self.convention = "2014"
        elif (self.root / "JPEGImages" / "train").is_dir() or (self.root / "JPEGImages" / "val").is_dir():
            self.convention = "short"
        else:
            raise PipelineError(
                f"config key dataset.root: {self.root}/JPEGImages has neither train2014/val2014 nor train/val"
            )

    def split_path(self, split: str) -> Path:
        for d in self.split_dirs:
            if (d / f"{split}.txt").is_file():
                return d / f"{split}.txt"
        raise PipelineError(f"split list for '{split}' not found (tried {', '.join(str(d) for d in self.split_dirs)})")

    def ids(self, split: str) -> list[str]:
        return read_split_list(self.split_path(split))

    @staticmethod
    def _subset(image_id: str) -> str:
        if image_id.startswith("COCO_train2014_"):
            return "train"
        if image_id.startswith("COCO_val2014_"):
            return "val"
        raise PipelineError(f"COCO id {image_id!r} does not start with COCO_train2014_ or COCO_val2014_")

    def _folder(self, image_id: str) -> str:
        sub = self._subset(image_id)
        return f"{sub}2014" if self.convention == "2014" else sub

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / self._folder(image_id) / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path | None:
        name = image_id if self.convention == "2014" else image_id.split("_")[-1]
        return self.root / "SegmentationClass" / self._folder(image_id) / f"{name}.png"
