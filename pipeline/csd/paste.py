"""Foreground / background copy-paste of a single-label source into a target (PSD_WSSS
`VOC12Dataset.__getitem__` with FixMatch=True), and the dataset of paste pairs.

Both images go through the classifier's own augmentation independently (IRN: long side in
[lo, hi], flip, crop; MCTformer as PSD_WSSS: short side 256, flip, crop 224), then the source is pasted frame-aligned (PSD_WSSS: scale 1.0, offset 0):
  foreground paste: source pixels of the paste class overwrite the target; label = union;
  background paste: source background overwrites the target only where the target is
                    background too; the target's objects and label are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.csd.cooccurrence import PasteClassSampler
from pipeline.csd.masks import RoundOneMasks
from pipeline.data.base import SegDataset
from pipeline.data.transforms import hflip, normalize, random_crop, random_resize_long, resize, to_chw

SOURCE_BACKGROUND = ("complement", "confident")


def paste_foreground(target: np.ndarray, source: np.ndarray, source_fg: np.ndarray) -> np.ndarray:
    """HxWx3 target with the source's pixels where `source_fg` (HxW bool)."""
    return np.where(source_fg[..., None], source, target)


def paste_background(target: np.ndarray, source: np.ndarray, source_bg: np.ndarray,
                     target_bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, pasted region): the source's background where both are background."""
    region = source_bg & target_bg
    return np.where(region[..., None], source, target), region


def source_background(source_mask: np.ndarray, paste_class: int, valid: np.ndarray, rule: str) -> np.ndarray:
    """Where the source counts as background. `complement` (PSD_WSSS: not the pasted class; its
    round-1 masks have no uncertain label) or `confident` (label 0 only, leaving the dual
    thresholds' uncertain band out). Crop padding is never background: it is not image."""
    if rule == "complement":
        return (source_mask != paste_class) & valid
    if rule == "confident":
        return (source_mask == 0) & valid
    raise ValueError(f"unknown source background rule {rule!r}")


def resize_short(img: np.ndarray, mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear) and mask (nearest) rescaled so the short side is `side` (PSD_WSSS: 256)."""
    h, w = img.shape[:2]
    s = side / min(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return resize(img, size), resize(mask, size, nearest=True)


def augment(img: np.ndarray, mask: np.ndarray, crop: int, resize_long: Sequence[int],
            rng: np.random.Generator, short_side: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The classifier's augmentation with the mask following: (normalised crop, mask crop with
    255 padding, bool map of the pixels that come from the image). IRN's train_cam: long side
    uniform in `resize_long`, flip, crop; with `short_side` (PSD_WSSS's paste geometry for
    MCTformer): short side fixed to `short_side`, flip, crop."""
    if short_side:
        img, mask = resize_short(img, mask, int(short_side))
    else:
        img, mask = random_resize_long(img, int(resize_long[0]), int(resize_long[1]), rng, mask)
    if rng.random() < 0.5:
        img, mask = hflip(img), hflip(mask)
    out, mout, box = random_crop(normalize(img), crop, rng, mask)
    valid = np.zeros((crop, crop), bool)
    valid[box[0] : box[2], box[1] : box[3]] = True
    return out, mout, valid


def multi_hot(classes: Sequence[int], num_fg: int) -> np.ndarray:
    vec = np.zeros(num_fg, np.float32)
    vec[[int(c) - 1 for c in classes]] = 1
    return vec


def paste_pair(target: np.ndarray, target_mask: np.ndarray, target_classes: Sequence[int], source: np.ndarray,
               source_mask: np.ndarray, source_valid: np.ndarray, paste_class: int, num_fg: int,
               source_bg_rule: str) -> dict:
    """Both pastes of one (target, source) pair of equal-size crops (HxWx3, masks HxW).

    Returns the images, multi-hot labels (FG: union; BG: the target's), the pasted regions and
    the pasted label maps (FG: the source object on the target's map; BG: the target's map,
    since background only lands on background), and the 0-based paste class.
    """
    fg_region = source_mask == paste_class
    s_bg = source_background(source_mask, paste_class, source_valid, source_bg_rule)
    bg_image, bg_region = paste_background(target, source, s_bg, target_mask == 0)
    t_label, s_label = multi_hot(target_classes, num_fg), multi_hot([paste_class], num_fg)
    return {
        "source_label": s_label,
        "paste_class": paste_class - 1,
        "fg_image": paste_foreground(target, source, fg_region),
        "fg_label": np.maximum(t_label, s_label),
        "fg_region": fg_region,
        "fg_mask": np.where(fg_region, np.uint8(paste_class), target_mask).astype(np.uint8),
        "bg_image": bg_image,
        "bg_label": t_label,
        "bg_region": bg_region,
        "bg_mask": target_mask.copy(),
    }


class PastePairDataset(Dataset):
    """Item i: target = training image i, source drawn by the co-occurrence sampler.

    Returns the source crop, the FG- and BG-pasted images with their labels (multi-hot) and
    pasted regions, and the paste class (0-based channel). Randomness comes from numpy's global
    RNG, which `ResumableLoader` seeds per (seed, epoch, index) draw.
    """

    def __init__(self, ds: SegDataset, ids: list[str], labels: Mapping[str, Sequence[int]],
                 masks: RoundOneMasks, sampler: PasteClassSampler, crop: int, resize_long: Sequence[int],
                 source_bg_rule: str = "complement", short_side: int | None = None) -> None:
        if source_bg_rule not in SOURCE_BACKGROUND:
            raise ValueError(f"unknown source background rule {source_bg_rule!r}")
        self.ds, self.ids, self.labels, self.masks, self.sampler = ds, ids, labels, masks, sampler
        self.crop, self.resize_long, self.source_bg_rule = crop, tuple(resize_long), source_bg_rule
        self.short_side = short_side
        self.num_fg = ds.num_classes - 1

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, image_id: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img = self.ds.image(image_id)
        return augment(img, self.masks.label(image_id, img.shape[:2]), self.crop, self.resize_long, rng,
                       self.short_side)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(np.random.randint(0, 2**31))
        target_id = self.ids[i]
        target_classes = [int(c) for c in self.labels[target_id]]
        paste_class, source_id = self.sampler.sample(target_classes, rng)
        t_img, t_mask, _ = self._load(target_id, rng)
        s_img, s_mask, s_valid = self._load(source_id, rng)
        pair = paste_pair(t_img, t_mask, target_classes, s_img, s_mask, s_valid, paste_class, self.num_fg,
                          self.source_bg_rule)
        item = {"source": torch.from_numpy(to_chw(s_img)), "paste_class": pair["paste_class"]}
        for key in ("fg_image", "bg_image"):
            item[key] = torch.from_numpy(to_chw(pair[key]))
        for key in ("source_label", "fg_label", "bg_label", "fg_region", "bg_region"):
            item[key] = torch.from_numpy(pair[key])
        return item
