"""Torch datasets over a SegDataset + the dataset index, for the CAM-style training stages."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.base import SegDataset
from pipeline.data.transforms import hflip, normalize, random_crop, random_resize_long, to_chw


def label_vector(classes: list[int], num_classes: int) -> np.ndarray:
    """Multi-hot float32 target over the foreground classes from 1-based class ids."""
    vec = np.zeros(num_classes - 1, np.float32)
    vec[[c - 1 for c in classes]] = 1
    return vec


class CAMTrainDataset(Dataset):
    """IRN's train_cam augmentation: long side in [lo, hi], flip, normalise, crop (pad 0).

    Randomness is drawn from numpy's global RNG, which `ResumableLoader` seeds per
    (seed, epoch, index) draw, so a resumed run reproduces the same crops.
    """

    def __init__(self, ds: SegDataset, ids: list[str], labels: dict[str, list[int]], crop: int,
                 resize_long: tuple[int, int]) -> None:
        self.ds, self.ids, self.crop, self.resize_long = ds, ids, crop, tuple(resize_long)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    def label_vector(self, image_id: str) -> np.ndarray:
        return label_vector(self.labels[image_id], self.ds.num_classes)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(np.random.randint(0, 2**31))
        image_id = self.ids[i]
        img = self.ds.image(image_id)
        img, _ = random_resize_long(img, *self.resize_long, rng)
        if rng.random() < 0.5:
            img = hflip(img)
        img, _, _ = random_crop(normalize(img), self.crop, rng)
        return {"image": torch.from_numpy(to_chw(img)), "label": torch.from_numpy(self.label_vector(image_id)),
                "index": i}
