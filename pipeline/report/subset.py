"""The fixed, seeded subset of evaluation images shown in the report's qualitative rows."""

from __future__ import annotations

import numpy as np


def qualitative_ids(index: dict, num_images: int, seed: int) -> list[str]:
    """`num_images` ids of the eval split drawn with `seed` (sorted), the same for every method.

    infer_deeplab predicts them too, so every row can show the final prediction of a training image.
    """
    ids = sorted(index["splits"]["eval"]["ids"])
    if num_images <= 0 or not ids:
        return []
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ids), size=min(num_images, len(ids)), replace=False)
    return sorted(ids[i] for i in pick)
