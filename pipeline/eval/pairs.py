"""Which class pairs count as co-occurring, for the co-occurrence confusion ratio."""

from __future__ import annotations

import numpy as np

from pipeline.data import SegDataset, SyntheticDataset


def cooccurring_pairs(ds: SegDataset, index: dict, min_rate: float = 0.3, min_count: int = 10) -> list[tuple[int, int]]:
    """(c, k) pairs: predicting c on pixels of k is the co-occurrence error to measure.

    Synthetic data: the generator's object pairs, both ways, plus (context class, background)
    because the context is background in the ground truth. Real data: pairs whose image-level
    rate P(k | c) on the training split is >= min_rate over >= min_count images.
    """
    if isinstance(ds, SyntheticDataset):
        pairs = []
        for a, b in ds.meta["partner_pairs"]:
            pairs += [(int(a), int(b)), (int(b), int(a))]
        pairs += [(int(c), 0) for c in sorted(set(ds.context_to_class.values()))]
        return pairs
    cc = np.asarray(index["splits"]["train"]["class_cooccurrence"])
    pairs = []
    for c in range(len(cc)):
        for k in range(len(cc)):
            if c != k and cc[c, c] and cc[c, k] >= min_count and cc[c, k] / cc[c, c] >= min_rate:
                pairs.append((c + 1, k + 1))
    return pairs


def pair_name(ds: SegDataset, pair: tuple[int, int]) -> str:
    return f"{ds.class_names[pair[0]]}->{ds.class_names[pair[1]]}"
