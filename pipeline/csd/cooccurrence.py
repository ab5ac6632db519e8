"""Co-occurrence-oriented choice of the class to paste (PSD_WSSS `coupling_degree_estimation`,
`generate_cls_sample`).

Classes are 1-based ids here (the dataset index convention); matrices are indexed by id - 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def cooccurrence_counts(labels: Iterable[Sequence[int]], num_fg: int) -> np.ndarray:
    """num_fg x num_fg counts, initialised to 1: +1 on the diagonal per single-label image, and
    +1 on (i, j) and (j, i) for every class pair of a multi-label image."""
    mat = np.ones((num_fg, num_fg), np.float64)
    for classes in labels:
        idx = sorted({int(c) - 1 for c in classes})
        if len(idx) == 1:
            mat[idx[0], idx[0]] += 1
        for a, i in enumerate(idx):
            for j in idx[a + 1 :]:
                mat[i, j] += 1
                mat[j, i] += 1
    return mat


def cooccurrence_prior(counts: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax(temperature * counts): row k is how strongly k couples with each class.

    PSD_WSSS multiplies the counts by 0.1 (called the temperature here); counts in the hundreds
    (VOC) make rows nearly one-hot on the most frequent partner.
    """
    z = counts * temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def paste_class_distribution(prior: np.ndarray, target_classes: Sequence[int],
                             available: np.ndarray | None = None) -> np.ndarray:
    """P(paste class) for a target with `target_classes` (1-based): sum of their prior rows,
    normalised. `available` (bool per class) removes classes that have no source image;
    PSD_WSSS would crash on those, and on a target without classes (uniform here)."""
    num_fg = prior.shape[0]
    idx = [int(c) - 1 for c in target_classes]
    weights = prior[idx].sum(0) if idx else np.ones(num_fg)
    if available is not None:
        if not available.any():
            raise ValueError("no class has a source image to paste")
        weights = np.where(available, weights, 0.0)
        if weights.sum() <= 0:  # every class the target couples with lacks sources
            weights = available.astype(np.float64)
    return weights / weights.sum()


class PasteClassSampler:
    """Draws (paste class, source image) for a target: class by the co-occurrence prior of the
    target's classes, then a uniformly chosen single-label image of that class."""

    def __init__(self, labels: Mapping[str, Sequence[int]], num_fg: int, temperature: float,
                 sources: Sequence[str] | None = None) -> None:
        """`labels`: image id -> 1-based classes (all training images build the counts);
        `sources`: the single-label ids that may be pasted (default: every single-label id)."""
        self.prior = cooccurrence_prior(cooccurrence_counts(labels.values(), num_fg), temperature)
        pool = [i for i in (sources if sources is not None else labels) if len(set(labels[i])) == 1]
        self.by_class: dict[int, list[str]] = {c: [] for c in range(1, num_fg + 1)}
        for image_id in sorted(pool):
            self.by_class[int(labels[image_id][0])].append(image_id)
        self.available = np.array([bool(self.by_class[c]) for c in range(1, num_fg + 1)])
        if not self.available.any():
            raise ValueError("the training split has no single-label image to use as a CSD source")

    def distribution(self, target_classes: Sequence[int]) -> np.ndarray:
        return paste_class_distribution(self.prior, target_classes, self.available)

    def sample(self, target_classes: Sequence[int], rng: np.random.Generator) -> tuple[int, str]:
        p = self.distribution(target_classes)
        c = int(rng.choice(len(p), p=p)) + 1
        pool = self.by_class[c]
        return c, pool[int(rng.integers(len(pool)))]
