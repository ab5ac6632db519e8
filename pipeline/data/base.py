"""The one reader interface every dataset implements (VOC, COCO, synthetic)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.palette import read_index_png
from pipeline.errors import PipelineError


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image as HxWx3 uint8 RGB; grayscale/CMYK are converted (COCO has both)."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: image file is missing") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PipelineError(f"{path}: cannot decode image ({exc})") from exc


def read_split_list(path: Path) -> list[str]:
    if not path.is_file():
        raise PipelineError(f"{path}: split list not found")
    ids = []
    for line in path.read_text().splitlines():
        token = line.split()[0] if line.strip() else ""
        if token:
            # IRN/ToCo lists are bare ids; SBD-style lists may hold "/JPEGImages/x.jpg /Seg.../x.png".
            ids.append(Path(token).stem if "/" in token else token)
    return ids


class SegDataset(ABC):
    """ids per split, RGB image, index mask, image-level labels and class names.

    `class_names[0]` is background; labels are multi-hot over the foreground classes
    (length `num_classes - 1`, like IRN's cls_labels.npy).
    """

    kind: str = "base"

    def __init__(self, root: str | os.PathLike, class_names: list[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise PipelineError(f"config key dataset.root: {self.root} is not a directory")
        self.class_names = list(class_names)
        self._label_cache: dict[str, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def ids(self, split: str) -> list[str]: ...

    def split_path(self, split: str) -> Path:
        """The file that lists the split's ids (for messages)."""
        return Path(f"<{self.kind} split {split!r}>")

    @abstractmethod
    def image_path(self, image_id: str) -> Path: ...

    @abstractmethod
    def mask_path(self, image_id: str) -> Path | None:
        """Path of the index mask, or None when the split has no masks (e.g. VOC test)."""

    def image(self, image_id: str) -> np.ndarray:
        return read_rgb(self.image_path(image_id))

    def mask(self, image_id: str, *, check_size: tuple[int, int] | None = None) -> np.ndarray | None:
        path = self.mask_path(image_id)
        if path is None:
            return None
        if not path.is_file():
            raise PipelineError(f"{path}: mask file is missing")
        mask = read_index_png(path)
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            raise PipelineError(
                f"{path}: class index {int(mask[bad].max())} outside 0..{self.num_classes - 1} (or 255)"
            )
        if check_size is not None and mask.shape != tuple(check_size):
            raise PipelineError(
                f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                f"{check_size[1]}x{check_size[0]}"
            )
        return mask

    def labels_from_annotation(self, image_id: str) -> np.ndarray:
        raise PipelineError(f"{self.kind}: image {image_id} has no mask and no annotation to take labels from")

    def labels(self, image_id: str) -> np.ndarray:
        """Multi-hot image-level labels (foreground only), from the mask or the annotation."""
        if image_id in self._label_cache:
            return self._label_cache[image_id]
        mask = self.mask(image_id)
        if mask is None:
            vec = self.labels_from_annotation(image_id)
        else:
            vec = np.zeros(self.num_classes - 1, np.float32)
            present = [int(c) for c in np.unique(mask) if 0 < c < self.num_classes]
            vec[[c - 1 for c in present]] = 1
        self._label_cache[image_id] = vec
        return vec

    def present_classes(self, image_id: str) -> list[int]:
        """The image-level labels as 1-based class ids."""
        return [int(i) + 1 for i in np.flatnonzero(self.labels(image_id))]

    def set_label_cache(self, labels: dict[str, list[int]]) -> None:
        """Install labels from the dataset index (class ids 1..C-1) so masks need not be decoded."""
        for image_id, classes in labels.items():
            vec = np.zeros(self.num_classes - 1, np.float32)
            vec[[c - 1 for c in classes]] = 1
            self._label_cache[image_id] = vec
