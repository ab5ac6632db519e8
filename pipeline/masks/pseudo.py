"""Pseudo masks from a method's seeds: one recipe per method (config `masks.methods.<method>`)
and the conversion of one image's seed planes into a hard mask, before and after the CRF.

Label modes:
  dual    IRN: foreground where a CAM beats `fg_threshold` (0.30), background where no CAM
          beats `bg_threshold` (0.05), 255 (uncertain) between; refined by IRN's two label CRFs
  single  IRN's eval_cam argmax with one constant background plane `threshold`
  argmax  argmax of segmentation logits over all classes (SeCo's head), optionally restricted
          to background + the image-level labels; refined by a softmax-unary CRF
The final DeepLab predictions use `argmax` without restriction (val labels are unknown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.cli import require
from pipeline.errors import PipelineError
from pipeline.irn.cams import dual_threshold_labels, scores_to_label
from pipeline.masks.crf import CRFParams, crf_probabilities, crf_threshold_label, irn_dual_label, softmax

# Where a method's seeds come from -> the artifact kind stored there.
SOURCE_KINDS = {"cam": "scores", "seg_logits": "logits"}
LABEL_MODES = {"dual": "scores", "single": "scores", "argmax": "logits"}


@dataclass(frozen=True)
class MaskRecipe:
    key: str  # config key the recipe came from, for error messages
    source: str
    labels: str
    crf: CRFParams | None  # None: built for the raw masks only
    fg_threshold: float = 0.30
    bg_threshold: float = 0.05
    threshold: float = 0.15
    restrict_to_labels: bool = True

    @property
    def kind(self) -> str:
        """The artifact kind this recipe reads (`scores` or `logits`)."""
        return LABEL_MODES[self.labels]

    def check_kind(self, kind: str, path: str) -> None:
        if kind != self.kind:
            raise PipelineError(f"{path}: artifact kind {kind!r}, but {self.key}.labels={self.labels!r} needs {self.kind!r}")


def crf_preset(cfg: dict, name: str) -> CRFParams:
    presets = require(cfg, "crf.presets")
    if name not in presets:
        raise PipelineError(f"config key crf.presets.{name}: missing (known: {sorted(presets)})")
    return CRFParams.from_config(presets[name], f"crf.presets.{name}")


def method_recipe(cfg: dict, method: str, with_crf: bool = True) -> MaskRecipe:
    """The pseudo-mask recipe of `method` from `masks.methods.<method>` and `crf.presets`
    (without `with_crf` the CRF preset is neither read nor needed: export_masks)."""
    methods = require(cfg, "masks.methods")
    key = f"masks.methods.{method}"
    if method not in methods:
        raise PipelineError(f"config key {key}: missing (configured: {sorted(methods)})")
    entry: Mapping = methods[method]
    for field in ("source", "labels", "crf"):
        if field not in entry:
            raise PipelineError(f"config key {key}.{field}: missing")
    if entry["source"] not in SOURCE_KINDS:
        raise PipelineError(f"config key {key}.source: {entry['source']!r} is not one of {sorted(SOURCE_KINDS)}")
    if entry["labels"] not in LABEL_MODES:
        raise PipelineError(f"config key {key}.labels: {entry['labels']!r} is not one of {sorted(LABEL_MODES)}")
    if SOURCE_KINDS[entry["source"]] != LABEL_MODES[entry["labels"]]:
        raise PipelineError(f"config key {key}.labels: {entry['labels']!r} does not apply to source {entry['source']!r}")
    crf = crf_preset(cfg, entry["crf"]) if with_crf else None
    if crf is not None and entry["labels"] in ("dual", "single") and crf.unary != "labels":
        raise PipelineError(f"config key {key}.crf: preset {entry['crf']!r} has a softmax unary; CAM scores are "
                            f"not probabilities, so labels {entry['labels']!r} needs a preset with unary: labels")
    recipe = MaskRecipe(key=key, source=entry["source"], labels=entry["labels"], crf=crf,
                        **{k: entry[k] for k in ("fg_threshold", "bg_threshold", "threshold", "restrict_to_labels")
                           if k in entry})
    if recipe.labels == "dual" and not 0.0 <= recipe.bg_threshold <= recipe.fg_threshold:
        raise PipelineError(f"config key {key}.bg_threshold: must lie in [0, fg_threshold]")
    return recipe


def prediction_recipe(cfg: dict) -> MaskRecipe:
    """Final DeepLab predictions: argmax over all classes, refined with `crf.predictions`."""
    name = require(cfg, "crf.predictions")
    return MaskRecipe(key="crf.predictions", source="seg_logits", labels="argmax", crf=crf_preset(cfg, name),
                      restrict_to_labels=False)


def _logit_planes(planes: np.ndarray, classes: np.ndarray, present: Sequence[int] | None,
                  restrict: bool) -> tuple[np.ndarray, np.ndarray]:
    """(planes, class ids) to decide between: all classes, or background + present labels."""
    classes = np.asarray(classes, np.int64)
    if not restrict:
        return planes, classes
    if present is None:
        raise ValueError("restrict_to_labels needs the image-level labels")
    keep = [0, *sorted(int(c) for c in present)]
    pos = {int(c): i for i, c in enumerate(classes)}
    missing = [c for c in keep if c not in pos]
    if missing:
        raise PipelineError(f"logit planes lack classes {missing}")
    return planes[[pos[c] for c in keep]], np.asarray(keep, np.int64)


def raw_mask(recipe: MaskRecipe, planes: np.ndarray, classes: Sequence[int],
             present: Sequence[int] | None = None) -> np.ndarray:
    """The hard mask before the CRF: uint8 HxW of class ids (255 = uncertain for `dual`)."""
    if recipe.labels == "dual":
        return dual_threshold_labels(planes, list(classes), recipe.fg_threshold, recipe.bg_threshold)
    if recipe.labels == "single":
        return scores_to_label(planes, list(classes), recipe.threshold)
    planes, keys = _logit_planes(planes, np.asarray(classes), present, recipe.restrict_to_labels)
    return keys.astype(np.uint8)[planes.argmax(0)]


def refined_mask(recipe: MaskRecipe, image: np.ndarray, planes: np.ndarray, classes: Sequence[int],
                 present: Sequence[int] | None = None) -> np.ndarray:
    """The hard mask after the CRF (same conventions as `raw_mask`)."""
    if recipe.labels == "dual":
        return irn_dual_label(image, planes, list(classes), recipe.fg_threshold, recipe.bg_threshold, recipe.crf)
    if recipe.labels == "single":
        return crf_threshold_label(image, planes, list(classes), recipe.threshold, recipe.crf)
    planes, keys = _logit_planes(planes, np.asarray(classes), present, recipe.restrict_to_labels)
    return crf_probabilities(image, softmax(planes.astype(np.float32)), keys, recipe.crf)
