"""Dense CRF refinement (pydensecrf) and the label recipes the WSSS codes build on it.

All CRF math of the pipeline lives here:
  * `dense_crf`        one fully connected CRF: unary + Gaussian + bilateral kernels, mean field
  * `crf_softmax`      unary from class probabilities (kazuto1011/deeplab-pytorch, SeCo/ToCo)
  * `crf_labels`       unary from a hard label map, `unary_from_labels(gt_prob, zero_unsure=False)`
                       (IRN's `crf_inference_label`)
  * `irn_dual_label`   IRN's `cam_to_ir_label`: CRF the foreground-threshold and the
                       background-threshold argmax maps separately, then combine
                       (foreground from the first, 255 where it says background, 0 where both do)

Parameter names follow pydensecrf: Gaussian kernel (sxy, compat); bilateral kernel (sxy,
srgb, compat). pydensecrf is single-threaded C++; parallelism is the caller's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from pipeline.data.labels import IGNORE_INDEX
from pipeline.errors import PipelineError
from pipeline.irn.cams import scores_to_label

UNARIES = ("labels", "softmax")


@dataclass(frozen=True)
class CRFParams:
    unary: str  # "labels" (hard label map, gt_prob) or "softmax" (class probabilities)
    iterations: int
    gauss_sxy: float
    gauss_compat: float
    bi_sxy: float
    bi_srgb: float
    bi_compat: float
    gt_prob: float = 0.7

    @classmethod
    def from_config(cls, cfg: Mapping, key: str) -> CRFParams:
        """Build from a `crf.presets.<name>` mapping; errors name `key`."""
        fields = ("unary", "iterations", "gauss_sxy", "gauss_compat", "bi_sxy", "bi_srgb", "bi_compat")
        missing = [f for f in fields if f not in cfg]
        if missing:
            raise PipelineError(f"config key {key}: missing {', '.join(missing)}")
        if cfg["unary"] not in UNARIES:
            raise PipelineError(f"config key {key}.unary: {cfg['unary']!r} is not one of {UNARIES}")
        params = cls(**{f: cfg[f] for f in fields}, gt_prob=float(cfg.get("gt_prob", 0.7)))
        if params.iterations < 1:
            raise PipelineError(f"config key {key}.iterations: must be >= 1")
        if not 0.0 < params.gt_prob < 1.0:
            raise PipelineError(f"config key {key}.gt_prob: must lie in (0, 1)")
        return params


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"CRF image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if image.shape[:2] != shape:
        raise ValueError(f"CRF image {image.shape[:2]} does not match the unary {shape}")
    # pydensecrf needs a writable C-contiguous buffer (PIL-decoded arrays are read-only), as IRN's np.copy
    return np.array(image, dtype=np.uint8, order="C", copy=True)


def dense_crf(image: np.ndarray, unary: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean-field inference of a dense CRF; `unary` is n x H x W energy (-log p). Returns Q (n x H x W)."""
    n, h, w = unary.shape
    img = _check_image(image, (h, w))
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n, -1), dtype=np.float32))
    d.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    d.addPairwiseBilateral(sxy=params.bi_sxy, srgb=params.bi_srgb, rgbim=img, compat=params.bi_compat)
    q = d.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(n, h, w)


def crf_softmax(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """kazuto1011's / SeCo's `DenseCRF.__call__`: unary = -log(probabilities); returns Q."""
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    return dense_crf(image, unary_from_softmax(probs).reshape(probs.shape), params)


def crf_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, params: CRFParams) -> np.ndarray:
    """IRN's `crf_inference_label`: unary from a hard map of indices 0..n_labels-1; returns argmax."""
    h, w = labels.shape
    if n_labels < 2:  # one label: nothing to decide (pydensecrf would divide by n_labels - 1)
        return np.zeros((h, w), np.int64)
    unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=params.gt_prob, zero_unsure=False)
    return dense_crf(image, unary.reshape(n_labels, h, w), params).argmax(0)


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def combine_dual(fg_conf: np.ndarray, bg_conf: np.ndarray) -> np.ndarray:
    """IRN's combination: foreground from the high-threshold map, 255 where it is background,
    0 where both maps are background."""
    out = fg_conf.astype(np.uint8).copy()
    out[fg_conf == 0] = IGNORE_INDEX  # the uncertain band, ignored by DeepLab
    out[(fg_conf == 0) & (bg_conf == 0)] = 0
    return out


def crf_threshold_label(image: np.ndarray, scores: np.ndarray, classes: Sequence[int], bg_threshold: float,
                        params: CRFParams) -> np.ndarray:
    """argmax over [constant background plane, CAMs] refined by a label-unary CRF, as class ids."""
    keys = np.asarray([0, *classes], np.uint8)
    if len(classes) == 0:
        return np.zeros(scores.shape[1:], np.uint8)
    compact = _compact(scores_to_label(scores, classes, bg_threshold), keys)
    return keys[crf_labels(image, compact, len(keys), params)]


def irn_dual_label(image: np.ndarray, scores: np.ndarray, classes: Sequence[int], fg_threshold: float,
                   bg_threshold: float, params: CRFParams) -> np.ndarray:
    """IRN's cam_to_ir_label (conf_fg_thres 0.30, conf_bg_thres 0.05): uint8 HxW, 255 uncertain."""
    if params.unary != "labels":
        raise PipelineError("IRN's dual-threshold CRF refines hard label maps: its CRF preset needs unary: labels")
    fg_conf = crf_threshold_label(image, scores, classes, fg_threshold, params)
    bg_conf = crf_threshold_label(image, scores, classes, bg_threshold, params)
    return combine_dual(fg_conf, bg_conf)


def crf_probabilities(image: np.ndarray, probs: np.ndarray, keys: Sequence[int], params: CRFParams) -> np.ndarray:
    """Refine per-pixel class probabilities (planes of class ids `keys`) and return class ids.

    With a label-unary preset the CRF starts from the argmax map instead of the probabilities.
    """
    keys_arr = np.asarray(keys, np.uint8)
    if len(keys_arr) < 2:
        return np.full(probs.shape[1:], keys_arr[0] if len(keys_arr) else 0, np.uint8)
    if params.unary == "softmax":
        return keys_arr[crf_softmax(image, probs, params).argmax(0)]
    return keys_arr[crf_labels(image, probs.argmax(0), len(keys_arr), params)]


def _compact(label: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Class ids -> plane indices 0..len(keys)-1."""
    lut = np.zeros(256, np.int64)
    lut[keys] = np.arange(len(keys))
    return lut[label]
