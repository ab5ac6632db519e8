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


def val_ids(index: dict, num_images: int, seed: int) -> list[str]:
    """`num_images` ids of the val split drawn with `seed` (sorted); infer_deeplab predicts every val image."""
    ids = sorted(index["splits"].get("val", {}).get("ids", []))
    if num_images <= 0 or not ids:
        return []
    rng = np.random.default_rng(seed + 1)  # another stream than the eval rows', so the subsets differ
    pick = rng.choice(len(ids), size=min(num_images, len(ids)), replace=False)
    return sorted(ids[i] for i in pick)


def worst_ids(per_image_iou: dict[str, float], num_images: int) -> list[tuple[str, float]]:
    """The `num_images` (id, IoU) pairs with the lowest IoU, ties broken by id; NaN (no class to
    score) is left out."""
    scored = sorted((v, k) for k, v in per_image_iou.items() if v == v)
    return [(k, v) for v, k in scored[:max(0, num_images)]]
