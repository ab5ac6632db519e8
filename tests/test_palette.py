"""Palette and index-PNG I/O."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.data.palette import VOC_COLORMAP, colorize, read_index_png, write_index_png
from pipeline.errors import PipelineError


def test_colormap_known_entries() -> None:
    assert VOC_COLORMAP.shape == (256, 3)
    assert tuple(VOC_COLORMAP[0]) == (0, 0, 0)
    assert tuple(VOC_COLORMAP[1]) == (128, 0, 0)
    assert tuple(VOC_COLORMAP[15]) == (192, 128, 128)  # person
    assert tuple(VOC_COLORMAP[255]) == (224, 224, 192)


def test_roundtrip_keeps_indices_including_255(tmp_path) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, size=(7, 9), dtype=np.uint8)
    mask[0, :] = 255
    path = tmp_path / "m.png"
    write_index_png(path, mask)
    with Image.open(path) as img:
        assert img.mode == "P"
    out = read_index_png(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, mask)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary left behind


def test_reads_grayscale_index_png(tmp_path) -> None:
    mask = np.array([[0, 3], [255, 20]], dtype=np.uint8)
    path = tmp_path / "l.png"
    Image.fromarray(mask).save(path)
    np.testing.assert_array_equal(read_index_png(path), mask)


def test_colorize() -> None:
    rgb = colorize(np.array([[1, 255]], dtype=np.uint8))
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 0, 0)
    assert tuple(rgb[0, 1]) == (224, 224, 192)


def test_corrupt_png_names_path(tmp_path) -> None:
    path = tmp_path / "corrupt.png"
    path.write_bytes(np.random.default_rng(1).bytes(200))
    with pytest.raises(PipelineError, match="corrupt.png"):
        read_index_png(path)


def test_truncated_png_names_path(tmp_path) -> None:
    good = tmp_path / "good.png"
    write_index_png(good, np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 21)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good.read_bytes()[:80])
    with pytest.raises(PipelineError, match="truncated.png"):
        read_index_png(bad)


def test_missing_file_names_path(tmp_path) -> None:
    with pytest.raises(PipelineError, match="absent.png"):
        read_index_png(tmp_path / "absent.png")


def test_rgb_png_rejected(tmp_path) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    with pytest.raises(PipelineError, match="rgb.png"):
        read_index_png(path)


def test_write_rejects_out_of_range(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_index_png(tmp_path / "x.png", np.array([[256]]))
    assert not any(tmp_path.iterdir())
