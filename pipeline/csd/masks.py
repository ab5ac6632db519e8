"""Round-1 pseudo masks of the training images: where CSD cuts source objects and finds the
target's background. uint8 HxW per image, 0 background, class ids, 255 uncertain."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactReader
from pipeline.irn.cams import dual_threshold_labels

SOURCE_KINDS = ("cam_seeds", "crf_masks", "rw_masks")


class RoundOneMasks:
    """`cam_seeds`: IRN's dual thresholds on the round-1 method's CAM scores (no CRF);
    `crf_masks` / `rw_masks`: the mask artifact of the CRF stage / the random walk, read as is. `key` names the config key in errors."""

    def __init__(self, path: str | Path, kind: str, fg_threshold: float = 0.30, bg_threshold: float = 0.05,
                 key: str = "csd.source_masks") -> None:
        if kind not in SOURCE_KINDS:
            raise PipelineError(f"config key {key}: {kind!r} is not one of {', '.join(SOURCE_KINDS)}")
        self.kind = kind
        self.fg_threshold, self.bg_threshold = fg_threshold, bg_threshold
        self.reader = ArtifactReader(path, expect="scores" if kind == "cam_seeds" else "mask")

    def check_covers(self, ids: list[str]) -> None:
        missing = [i for i in ids if i not in self.reader]
        if missing:
            raise PipelineError(f"{self.reader.path}: no entry for {len(missing)} training image(s), "
                                f"e.g. {missing[0]!r}; it must come from the same dataset index")

    def label(self, image_id: str, size: tuple[int, int]) -> np.ndarray:
        if self.kind == "cam_seeds":
            scores, classes = self.reader.scores(image_id)
            mask = dual_threshold_labels(scores, classes.tolist(), self.fg_threshold, self.bg_threshold)
        else:
            mask = self.reader.mask(image_id)
        if mask.shape != tuple(size):
            raise PipelineError(f"{self.reader.path}: {image_id} is {mask.shape[1]}x{mask.shape[0]} "
                                f"but its image is {size[1]}x{size[0]}")
        return mask
