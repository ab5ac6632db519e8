"""PSA's random walk (jiwoon-ahn/psa `infer_aff.py`) as MCTformer runs it (xulianuwa/MCTformer
`psa/infer_aff.py` via run_psa.sh), on the affinities of IRN's boundary map.

The recipe, per image:
  1. the full-resolution class maps of the present classes, with a background plane in front:
     MCTformer a constant `bg_score` (its `--bg_thr`, default 0.39); PSA (1 - max over classes)^alpha
     (its `--alpha`, default 16);
  2. every plane zero-padded right and bottom to a multiple of `stride` and average-pooled by
     `stride` (8) to the affinity grid;
  3. the transition matrix T = A^beta (beta 8), each column normalised to sum 1, squared `logt`
     times (MCTformer 6, PSA 8), i.e. 2^logt steps; the background plane walks with the classes,
     and nothing is damped;
  4. the walked planes upsampled bilinearly to the padded image, cropped, argmax (0 = background).

What differs from PSA is where A comes from. PSA's AffinityNet predicts each pair's affinity
from learned features (exp of minus their mean L1 distance) on its stride-8 grid. Here A is IRN's:
1 - the largest boundary score on the pair's path (`affinity.dense_affinity`), from the IRN
boundary network trained on the method's labels (stride-4 grid); for a coarser walk grid the
boundary map is max-pooled to it first, so a boundary anywhere in a cell separates that cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.io.h5store import upsample_scores
from pipeline.irn.affinity import dense_affinity, propagate, transition_matrix
from pipeline.irn.edge import GRID_STRIDE


def with_background(planes: np.ndarray, bg_score: float, alpha: float | None = None) -> np.ndarray:
    """(K+1) x H x W: the background plane in front of the K class planes. `alpha` None: the
    constant `bg_score` (MCTformer's infer_aff); otherwise PSA's (1 - max over classes)^alpha
    (an image without classes then has background 1)."""
    planes = np.asarray(planes, np.float32)
    if alpha is None:
        bg = np.full((1, *planes.shape[1:]), bg_score, np.float32)
    else:
        peak = planes.max(0, keepdims=True) if planes.shape[0] else np.zeros((1, *planes.shape[1:]), np.float32)
        bg = np.power(np.clip(1 - peak, 0, None), alpha).astype(np.float32)
    return np.concatenate([bg, planes])


def pool_scores(planes: torch.Tensor, stride: int) -> torch.Tensor:
    """K x H x W -> K x ceil(H/s) x ceil(W/s): zero padding right/bottom to a multiple of `stride`,
    then the mean of each stride x stride cell (PSA: np.pad with 0, F.avg_pool2d(8, 8))."""
    h, w = planes.shape[-2:]
    ph, pw = -h % stride, -w % stride
    x = F.pad(planes[None], (0, pw, 0, ph))
    return F.avg_pool2d(x, stride, stride)[0]


def pool_boundary(edge: torch.Tensor, stride: int) -> torch.Tensor:
    """IRN's stride-4 boundary map (h x w) on the stride-`stride` walk grid: the largest score of
    each cell's stride-4 cells (ceil mode, so the grid is ceil(H/stride) like the pooled scores)."""
    if stride % GRID_STRIDE:
        raise ValueError(f"walk stride {stride} is not a multiple of the boundary grid's {GRID_STRIDE}")
    k = stride // GRID_STRIDE
    if k == 1:
        return edge
    return F.max_pool2d(edge[None, None], k, k, ceil_mode=True)[0, 0]


def psa_random_walk(scores: torch.Tensor, edge: torch.Tensor, radius: int = 5, beta: float = 8.0,
                    logt: int = 6) -> torch.Tensor:
    """(K+1) x h x w pooled scores (background first) walked by T^(2^logt), T = column-normalised
    A^beta of the h x w boundary map's affinities within `radius` (A has ones on its diagonal)."""
    k, h, w = scores.shape
    if edge.shape != (h, w):
        raise ValueError(f"boundary map {tuple(edge.shape)} does not match the walk grid {(h, w)}")
    trans = transition_matrix(dense_affinity(edge, radius), beta)
    return propagate(scores.reshape(k, h * w), trans, logt).reshape(k, h, w)


def walked_to_mask(rw: np.ndarray, classes: Sequence[int], orig_size: tuple[int, int], stride: int) -> np.ndarray:
    """PSA's decision: the walked (K+1) planes (background first) upsampled bilinearly to the
    stride-aligned image, cropped to `orig_size`, argmax mapped to [0, *classes]. uint8 H x W."""
    if rw.shape[0] != len(classes) + 1:
        raise ValueError(f"{rw.shape[0]} walked planes for background + {len(classes)} classes")
    up = upsample_scores(np.asarray(rw, np.float32), stride, orig_size)
    keys = np.asarray([0, *classes], np.uint8)
    return keys[up.argmax(0)]


def psa_mask(planes: np.ndarray, classes: Sequence[int], edge: torch.Tensor, walk: dict) -> np.ndarray:
    """The whole recipe for one image: full-resolution K x H x W maps of `classes`, IRN's stride-4
    boundary map (ceil(H/4) x ceil(W/4), on the device to use), `walk` = config irn.psa
    {stride, radius, beta, logt, bg_score, alpha}. uint8 H x W mask."""
    h, w = planes.shape[-2:]
    stride = walk["stride"]
    full = torch.from_numpy(with_background(planes, walk["bg_score"], walk.get("alpha"))).to(edge.device)
    with torch.no_grad():
        rw = psa_random_walk(pool_scores(full, stride), pool_boundary(edge, stride), walk["radius"], walk["beta"],
                             walk["logt"])
    return walked_to_mask(rw.cpu().numpy(), list(classes), (h, w), stride)
