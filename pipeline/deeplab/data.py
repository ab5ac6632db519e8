"""DeepLab's training data: a method's pseudo masks (or the GT for the ceiling) and kazuto1011's
augmentation. Pseudo-mask pixels marked uncertain (255) are ignored like GT void pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.base import SegDataset
from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.transforms import hflip, normalize, random_crop, resize, to_chw
from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactReader

# The fully supervised ceiling: the same DeepLab trained on the GT masks of the same images.
GT_METHOD = "gt"


class MaskSource:
    """Training masks of one method: the refined pseudo masks file, or the dataset's GT (`gt`)."""

    def __init__(self, ds: SegDataset, method: str, masks_path: str | None) -> None:
        if method != GT_METHOD and not masks_path:
            raise PipelineError(f"train_deeplab: method {method!r} needs --masks (its pseudo masks)")
        self.ds, self.method = ds, method
        self.reader = ArtifactReader(masks_path, expect="mask") if method != GT_METHOD else None

    def __call__(self, image_id: str) -> np.ndarray:
        if self.reader is not None:
            return self.reader.mask(image_id)
        mask = self.ds.mask(image_id)
        if mask is None:
            raise PipelineError(f"training image {image_id!r} has no ground-truth mask for the {GT_METHOD} ceiling")
        return mask


class SegTrainDataset(Dataset):
    """kazuto's augmentation: scale drawn from `scales`, flip, normalise, crop (image pad 0 = the
    mean after normalisation, label pad 255). numpy's global RNG is seeded per draw by
    `ResumableLoader`, so a resumed run reproduces the same crops."""

    def __init__(self, ds: SegDataset, ids: list[str], masks: Callable[[str], np.ndarray], crop: int,
                 scales: list[float]) -> None:
        self.ds, self.ids, self.masks, self.crop, self.scales = ds, ids, masks, crop, list(scales)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(np.random.randint(0, 2**31))
        image_id = self.ids[i]
        img, mask = self.ds.image(image_id), self.masks(image_id)
        if mask.shape != img.shape[:2]:
            raise PipelineError(f"mask of {image_id!r} is {mask.shape}, its image {img.shape[:2]}")
        s = float(self.scales[int(rng.integers(len(self.scales)))])
        size = (max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s)))
        img, mask = resize(img, size), resize(mask, size, nearest=True)
        if rng.random() < 0.5:
            img, mask = hflip(img), hflip(mask)
        img, mask, _ = random_crop(normalize(img), self.crop, rng, mask=mask, pad_value=0.0, mask_pad=IGNORE_INDEX)
        return {"image": torch.from_numpy(to_chw(img)), "mask": torch.from_numpy(mask.astype(np.int64)), "index": i}
