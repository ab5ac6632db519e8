"""SeCo's training views (`datasets/voc.py: VOC12ClsDataset` with aug=True).

Per image:
  image    the training crop: random rescale in [lo, hi] (bilinear, (int(r*w), int(r*h))),
           horizontal flip (p 0.5), random crop padded with black; ImageNet-normalised
  box      (y0, x0, y1, x1), the valid (non-padding) region of the crop (official img_box)
  s_image  the strong view of the same crop for the L-teacher: flip (p 0.5, independent of the
           crop, official; `strong_view_flip: false` leaves it aligned), colour jitter
           (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, Gaussian blur p 0.5
  w_image  the second global view: RandomResizedCrop(S, scale 0.4-1, bicubic) of the original
           image, flip, colour jitter p 0.8, grayscale p 0.2, blur p 0.1, solarisation p 0.2
  label, label_idx (the class for single-label images, -1 otherwise: prototypes use it)
With offline tags, the tag_patches boxes are mapped through the same rescale/flip/crop
(`separate.map_boxes`), giving patch_boxes (K x 4, crop pixels), patch_tags (K,), global_tag.
Randomness comes from python/numpy/torch RNGs, which `ResumableLoader` seeds per draw.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import Dataset

from pipeline._compat import ensure_torchvision_ops
from pipeline.data.base import SegDataset
from pipeline.data.classification import label_vector
from pipeline.data.transforms import hflip, normalize, random_crop, resize, to_chw
from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactReader
from pipeline.seco.tagging import map_boxes

ensure_torchvision_ops()
import torchvision.transforms as T  # noqa: E402 - needs the op shim above

OFFLINE_MIN_VISIBLE = 0.5  # an offline patch less than half inside the crop is ignored (tag -1)


class GaussianBlur:
    """PIL Gaussian blur with a random radius in [0.1, 2.0], applied with probability p (DINO)."""

    def __init__(self, p: float, radius: tuple[float, float] = (0.1, 2.0)) -> None:
        self.p, self.radius = p, radius

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))


class Solarize:
    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img) if random.random() < self.p else img


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(to_chw(normalize(np.asarray(img))))


def _jitter_chain(flip: bool) -> list:
    chain = [T.RandomHorizontalFlip(p=0.5)] if flip else []
    return chain + [T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
                    T.RandomGrayscale(p=0.2)]


class SeCoTrainDataset(Dataset):
    def __init__(self, ds: SegDataset, ids: list[str], labels: dict[str, list[int]], crop: int,
                 rescale: tuple[float, float], strong_view_flip: bool = True, tags_path: str | None = None,
                 num_patches: int | None = None) -> None:
        self.ds, self.ids, self.labels, self.crop = ds, ids, labels, crop
        self.rescale = tuple(rescale)
        self.strong = T.Compose([*_jitter_chain(strong_view_flip), GaussianBlur(0.5)])
        self.weak_global = T.Compose([T.RandomResizedCrop(crop, scale=(0.4, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                                      *_jitter_chain(True), GaussianBlur(0.1), Solarize(0.2)])
        self.tags = ArtifactReader(tags_path, expect="tags") if tags_path else None
        self.num_patches = num_patches

    def __len__(self) -> int:
        return len(self.ids)

    def label_vector(self, image_id: str) -> np.ndarray:
        return label_vector(self.labels[image_id], self.ds.num_classes)

    def __getitem__(self, i: int) -> dict:
        image_id = self.ids[i]
        img = self.ds.image(image_id)
        h, w = img.shape[:2]
        ratio = random.uniform(*self.rescale)
        nh, nw = max(1, int(ratio * h)), max(1, int(ratio * w))
        scaled = resize(img, (nh, nw))
        flipped = random.random() > 0.5
        if flipped:
            scaled = hflip(scaled)
        rng = np.random.default_rng(np.random.randint(0, 2**31))
        # Cropping an index map alongside tells where rescaled pixel (0, 0) lands in the crop.
        index = np.arange(nh * nw, dtype=np.int64).reshape(nh, nw)
        crop, index_crop, box = random_crop(scaled, self.crop, rng, mask=index, pad_value=0, mask_pad=-1)
        crop_pil = Image.fromarray(np.ascontiguousarray(crop))
        classes = self.labels[image_id]
        item = {
            "image": torch.from_numpy(to_chw(normalize(crop))),
            "s_image": _to_tensor(self.strong(crop_pil)),
            "w_image": _to_tensor(self.weak_global(Image.fromarray(img))),
            "label": torch.from_numpy(self.label_vector(image_id)),
            "label_idx": torch.tensor(classes[0] if len(classes) == 1 else -1, dtype=torch.long),
            "box": torch.tensor(box, dtype=torch.long),
            "index": i,
        }
        if self.tags is not None:
            item.update(self._patches(image_id, (h, w), (nh, nw), flipped, box, index_crop))
        return item

    def _patches(self, image_id: str, size: tuple[int, int], scaled: tuple[int, int], flipped: bool,
                 box: tuple[int, int, int, int], index_crop: np.ndarray) -> dict:
        assert self.tags is not None
        rows = self.tags.raw(image_id)
        if rows.shape[0] < self.num_patches:
            raise PipelineError(f"{self.tags.path}: {image_id} has {rows.shape[0]} patches but "
                                f"seco.num_local_crops is {self.num_patches}")
        src_y, src_x = divmod(int(index_crop[box[0], box[1]]), scaled[1])
        offset = (box[0] - src_y, box[1] - src_x)
        boxes, tags = map_boxes(rows[: self.num_patches], (scaled[0] / size[0], scaled[1] / size[1]),
                                scaled[1] if flipped else None, offset, self.crop, OFFLINE_MIN_VISIBLE)
        gtag = int(self.tags.attrs(image_id)["global_tag"])
        return {"patch_boxes": torch.from_numpy(boxes), "patch_tags": torch.from_numpy(tags),
                "global_tag": torch.tensor(gtag, dtype=torch.long)}
