"""IRN's inter-pixel relations: pair labels from IR labels, the affinity and displacement losses,
and the random walk of CAMs over the affinities of a boundary map (misc/indexing.py,
voc12/dataloader.py `GetAffinityLabelFromIndices`, net/resnet50_irn.py, step/train_irn.py,
step/make_sem_seg_labels.py).

Conventions: a boundary map is B x h x w (or h x w) in [0, 1] on the stride-4 grid; pair tensors
are D x N (directions x source cells of a `PathIndex`), batched as B x D x N.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.io.h5store import upsample_scores
from pipeline.irn.pathindex import PathIndex

EPS = 1e-5  # IRN's epsilon in the logs and the normalisers


# ---- Pair labels (training targets) ------------------------------------------------------
def pair_labels(label: np.ndarray, index: PathIndex, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bg_pos, fg_pos, neg) D x N bool arrays for an IR label map on the index's grid.

    A pair is valid when both cells carry a class (< num_classes; 255 = uncertain is ignored);
    valid pairs of equal labels are positive (background-background or same foreground class),
    valid pairs of different labels negative.
    """
    if label.shape != index.size:
        raise ValueError(f"label map {label.shape} does not match the path index grid {index.size}")
    flat = label.reshape(-1)
    src = flat[index.src_indices][None, :]
    dst = flat[index.dst_indices]
    valid = (src < num_classes) & (dst < num_classes)
    equal = src == dst
    pos = equal & valid
    return pos & (src == 0), pos & (src > 0), ~equal & valid


def reduce_label(label: np.ndarray, stride: int = 4) -> np.ndarray:
    """IRN's pil_rescale(label, 1/stride, order 0): nearest-neighbour to round(H/stride) x round(W/stride)."""
    from pipeline.data.transforms import resize

    h, w = label.shape
    size = (max(1, int(np.round(h / stride))), max(1, int(np.round(w / stride))))
    return resize(np.ascontiguousarray(label, dtype=np.uint8), size, nearest=True)


# ---- Affinities from a boundary map -------------------------------------------------------
def edge_to_affinity(edge: torch.Tensor, path_indices: Sequence[torch.Tensor]) -> torch.Tensor:
    """B x D x N affinities: 1 - the largest boundary score on each pair's path.

    `edge` is B x h x w (or B x 1 x h x w) on the grid the index was built for; `path_indices`
    are the index's per-length groups (n_g x L x N) as long tensors on edge's device.
    """
    flat = edge.reshape(edge.shape[0], -1)
    out = []
    for ind in path_indices:
        vals = flat.index_select(1, ind.reshape(-1)).view(flat.shape[0], *ind.shape)
        out.append(1 - vals.amax(dim=2))
    return torch.cat(out, dim=1)


def affinity_losses(aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor,
                    neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN's (positive, negative) affinity losses: cross-entropy of each pair's affinity, the
    positive term the mean of the background and foreground pair averages (so the far more
    numerous background pairs do not dominate)."""
    pos_loss = -torch.log(aff + EPS)
    neg_loss = -torch.log(1.0 + EPS - aff)
    bg = (bg_pos * pos_loss).sum() / (bg_pos.sum() + EPS)
    fg = (fg_pos * pos_loss).sum() / (fg_pos.sum() + EPS)
    return bg / 2 + fg / 2, (neg * neg_loss).sum() / (neg.sum() + EPS)


def pair_displacement(disp: torch.Tensor, index: PathIndex) -> torch.Tensor:
    """B x 2 x D x N: displacement of each source minus that of each of its destinations."""
    rows, cols = index.source_shape
    m = index.margin
    src = disp[:, :, :rows, m:m + cols]
    dst = torch.stack([disp[:, :, dy:dy + rows, m + dx:m + dx + cols] for dy, dx in index.directions.tolist()], 2)
    return (src.unsqueeze(2) - dst).flatten(3)


def displacement_losses(pair_disp: torch.Tensor, directions: torch.Tensor, bg_pos: torch.Tensor,
                        fg_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN's (foreground, background) displacement losses (L1). Two cells of one object point to
    the same centroid, so their displacement difference must equal their offset (`directions`,
    D x 2 as (dy, dx)); background cells get zero displacement differences. Each term is divided
    by twice its pair count (two components per pair)."""
    target = directions.t().to(pair_disp.dtype)[None, :, :, None]  # 1 x 2 x D x 1
    fg = ((pair_disp - target).abs() * fg_pos.unsqueeze(1)).sum() / (2 * fg_pos.sum() + EPS)
    bg = (pair_disp.abs() * bg_pos.unsqueeze(1)).sum() / (2 * bg_pos.sum() + EPS)
    return fg, bg


# ---- Random walk (inference) --------------------------------------------------------------
def affinity_pairs(edge: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, b, affinity) of every pair of cells of an h x w boundary map within `radius`, once per
    unordered pair, as flat cell indices. As IRN's propagate_to_edge: the map is padded with
    boundary 1 left, right and below, so every cell is a source; pairs reaching the padding have
    affinity 0 there and are simply left out here."""
    h, w = edge.shape
    r = radius
    padded = F.pad(edge[None, None], (r, r, 0, r), mode="constant", value=1.0)[0, 0]
    index = PathIndex(r, tuple(padded.shape))
    paths = [torch.from_numpy(p).to(edge.device) for p in index.path_indices]
    aff = edge_to_affinity(padded[None], paths)[0]  # D x N
    pw = padded.shape[1]
    src = torch.from_numpy(np.broadcast_to(index.src_indices, index.dst_indices.shape).reshape(-1)).to(edge.device)
    dst = torch.from_numpy(index.dst_indices.reshape(-1)).to(edge.device)
    sy, sx, dy, dx = src // pw, src % pw - r, dst // pw, dst % pw - r
    inside = (sy < h) & (sx >= 0) & (sx < w) & (dy < h) & (dx >= 0) & (dx < w)
    return sy[inside] * w + sx[inside], dy[inside] * w + dx[inside], aff.reshape(-1)[inside]


def dense_affinity(edge: torch.Tensor, radius: int) -> torch.Tensor:
    """n x n symmetric affinity matrix (n = h*w, ones on the diagonal) of an h x w boundary map."""
    a, b, vals = affinity_pairs(edge, radius)
    n = edge.numel()
    dense = torch.zeros(n, n, dtype=edge.dtype, device=edge.device)
    dense[a, b] = vals
    dense[b, a] = vals
    dense.fill_diagonal_(1.0)
    return dense


def transition_matrix(affinity: torch.Tensor, beta: float) -> torch.Tensor:
    """affinity^beta, each column normalised to sum 1 (IRN's to_transition_matrix before squaring)."""
    scaled = affinity.pow(beta)
    return scaled / scaled.sum(dim=0, keepdim=True)


def propagate(x: torch.Tensor, trans: torch.Tensor, exp_times: int) -> torch.Tensor:
    """x @ T^(2^exp_times) for K x n rows x and a dense T (IRN squares T exp_times times, then
    multiplies once). Evaluated the cheaper way: by squaring (exp_times n³) or by 2^exp_times
    row-vector products (2^exp_times K n²). The two differ only by float rounding."""
    steps = 2 ** exp_times
    n = trans.shape[0]
    if steps * max(x.shape[0], 1) <= exp_times * n:
        for _ in range(steps):
            x = x @ trans
        return x
    for _ in range(exp_times):
        trans = trans @ trans
    return x @ trans


def random_walk(cams: torch.Tensor, edge: torch.Tensor, radius: int = 5, beta: float = 10.0,
                exp_times: int = 8) -> torch.Tensor:
    """IRN's propagate_to_edge: K x h x w CAMs (stride-4 grid) damped by (1 - boundary) and
    propagated by 2^exp_times steps of the random walk on the boundary map's affinities
    (dense n x n transition matrix, n = h*w: 4 MB on the synthetic grids, ~0.6 GB for a VOC image,
    as IRN). Returns K x h x w."""
    k, h, w = cams.shape
    if edge.shape != (h, w):
        raise ValueError(f"boundary map {tuple(edge.shape)} does not match the CAM grid {(h, w)}")
    if k == 0:
        return cams.clone()
    trans = transition_matrix(dense_affinity(edge, radius), beta)
    x = (cams * (1 - edge)).reshape(k, h * w)
    return propagate(x, trans, exp_times).reshape(k, h, w)


def walk_to_mask(rw: np.ndarray, classes: Sequence[int], orig_size: tuple[int, int], stride: int,
                 bg_threshold: float) -> np.ndarray:
    """IRN's make_sem_seg_labels decision: upsample the walked maps to the image (bilinear,
    stride-aligned), divide by their joint maximum, put a constant background plane
    `bg_threshold` first, take the argmax and map planes to class ids. uint8 H x W."""
    h, w = orig_size
    if len(classes) != rw.shape[0]:
        raise ValueError(f"{rw.shape[0]} walked planes for {len(classes)} classes")
    if len(classes) == 0:
        return np.zeros((h, w), np.uint8)
    up = upsample_scores(np.asarray(rw, np.float32), stride, (h, w))
    peak = float(up.max())
    if not peak > 0:  # nothing activated anywhere: IRN would divide by zero; all background
        return np.zeros((h, w), np.uint8)
    planes = np.concatenate([np.full((1, h, w), bg_threshold, np.float32), up / peak])
    keys = np.asarray([0, *classes], np.uint8)
    return keys[planes.argmax(0)]

