"""PASCAL VOC colour map and index-PNG I/O for segmentation masks.

Masks are stored as palette ("P") PNGs whose pixel values are class indices; 255 means
"ignore" in ground truth and "uncertain" in pseudo masks. The palette is only for viewing:
every reader here works on the indices, never on the colours.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path

# Pillow raises different exception types for different kinds of broken files (SyntaxError for
# some malformed PNG chunks), so all of them must become the one clear PipelineError.
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_INDEX_MODES = ("P", "L")


def _voc_colormap(n: int = 256) -> np.ndarray:
    """The standard VOC map: bits of the index are interleaved into the high bits of R, G, B."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            shift = 7 - j
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_COLORMAP: np.ndarray = _voc_colormap()
VOC_COLORMAP.setflags(write=False)  # shared module constant; a stray in-place edit would recolour everything
_FLAT_PALETTE: list[int] = VOC_COLORMAP.reshape(-1).tolist()


def read_index_png(path: str | os.PathLike) -> np.ndarray:
    """Return the HxW uint8 class indices of a palette ("P") or grayscale ("L") PNG.

    Palette indices are returned as stored, without mapping colours back. An RGB mask, any
    other mode, a non-PNG or an unreadable file raises PipelineError naming `path`: an RGB
    mask would need a colour lookup that silently goes wrong on anti-aliased edges.
    """
    try:
        with Image.open(path) as img:
            img.load()
            fmt, mode = img.format, img.mode
            if fmt != "PNG":
                raise PipelineError(f"{path}: expected a PNG index mask, got format {fmt}")
            if mode not in _INDEX_MODES:
                raise PipelineError(
                    f"{path}: expected a palette (P) or grayscale (L) index PNG, got mode {mode!r}"
                )
            return np.array(img, dtype=np.uint8)
    except _READ_ERRORS as exc:
        raise PipelineError(f"{path}: cannot read mask PNG ({exc})") from exc


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"mask must have an integer dtype, got {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask values must lie in [0, 255], got [{mask.min()}, {mask.max()}]")
    return mask.astype(np.uint8, copy=False)


def write_index_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write `mask` (HxW, values 0..255) as a "P" PNG with the VOC palette, atomically."""
    img = Image.fromarray(_check_mask(mask))
    img.putpalette(_FLAT_PALETTE)  # turns the "L" image into "P" with the indices unchanged
    with atomic_path(path) as tmp:
        # The temporary's suffix is not ".png", so the format must be explicit.
        img.save(tmp, format="PNG")


def write_mask_folder(masks, out_dir: str | os.PathLike) -> int:
    """Every mask of `masks` (an ArtifactReader of kind `mask`: `ids()`, `mask(id)`) as
    `<out_dir>/<id>.png`, VOC palette, 255 = ignore / uncertain; the folder appears whole or not at all."""
    n = 0
    with atomic_path(out_dir, is_dir=True) as tmp:
        for image_id in masks.ids():
            write_index_png(Path(tmp) / f"{image_id}.png", masks.mask(image_id))
            n += 1
    return n


def colorize(mask: np.ndarray) -> np.ndarray:
    """Map an HxW index mask to an HxWx3 uint8 RGB image with the VOC colours."""
    return VOC_COLORMAP[_check_mask(mask)]
