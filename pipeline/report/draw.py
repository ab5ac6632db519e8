"""Report figures drawn with Pillow (no plotting library): a grouped bar chart, CAM heat maps,
and labelled image grids."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Tableau-10: distinguishable series colours.
SERIES_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                  (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
BLACK, GREY, WHITE = (0, 0, 0), (200, 200, 200), (255, 255, 255)


def font(size: int = 14) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_width(draw: ImageDraw.ImageDraw, text: str, f) -> float:
    return draw.textlength(text, font=f)


def bar_chart(categories: Sequence[str], series: Mapping[str, Sequence[float]], title: str,
              ylabel: str = "IoU", ymax: float = 1.0) -> Image.Image:
    """Grouped vertical bars: one group per category, one bar per series; NaN bars are left out."""
    n_cat, n_ser = len(categories), max(1, len(series))
    bar_w, gap = 12, 14
    group_w = n_ser * bar_w + gap
    left, right, top, bottom = 70, 20, 60, 110
    plot_h = 320
    width = max(left + right + n_cat * group_w, 480)
    img = Image.new("RGB", (width, top + plot_h + bottom), WHITE)
    d = ImageDraw.Draw(img)
    f, fs = font(14), font(12)
    d.text((left, 10), title, fill=BLACK, font=font(16))
    y0 = top + plot_h
    for k in range(6):  # y grid and ticks
        v = ymax * k / 5
        y = y0 - plot_h * k / 5
        d.line([(left, y), (width - right, y)], fill=GREY if k else BLACK)
        label = f"{v:.1f}"
        d.text((left - 8 - _text_width(d, label, fs), y - 7), label, fill=BLACK, font=fs)
    d.text((8, top - 24), ylabel, fill=BLACK, font=fs)
    for ci, cat in enumerate(categories):
        gx = left + gap / 2 + ci * group_w
        for si, values in enumerate(series.values()):
            v = values[ci]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            h = plot_h * max(0.0, min(float(v), ymax)) / ymax
            x = gx + si * bar_w
            d.rectangle([x, y0 - h, x + bar_w - 2, y0], fill=SERIES_COLOURS[si % len(SERIES_COLOURS)])
        # rotated class label under the group
        label = Image.new("RGBA", (int(_text_width(d, cat, fs)) + 4, 16), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), cat, fill=BLACK, font=fs)
        label = label.rotate(60, expand=True)
        img.paste(label, (int(gx + group_w / 2 - label.width / 2 - 4), y0 + 6), label)
    lx = left
    for si, name in enumerate(series):  # legend
        d.rectangle([lx, 36, lx + 12, 48], fill=SERIES_COLOURS[si % len(SERIES_COLOURS)])
        d.text((lx + 16, 34), name, fill=BLACK, font=f)
        lx += 16 + _text_width(d, name, f) + 18
    return img


def jet(values: np.ndarray) -> np.ndarray:
    """HxW values in [0, 1] -> HxWx3 uint8 with the jet colour map (CAM heat maps)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], -1) * 255).astype(np.uint8)


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + overlay.astype(np.float32) * alpha).astype(np.uint8)


def placeholder(shape: tuple[int, int], text: str = "n/a") -> np.ndarray:
    img = Image.new("RGB", (shape[1], shape[0]), (235, 235, 235))
    d = ImageDraw.Draw(img)
    f = font(12)
    d.text(((shape[1] - _text_width(d, text, f)) / 2, shape[0] / 2 - 7), text, fill=(120, 120, 120), font=f)
    return np.asarray(img)


def image_grid(rows: Sequence[Sequence[np.ndarray]], col_titles: Sequence[str], row_titles: Sequence[str],
               cell: int = 128, title: str = "") -> Image.Image:
    """Rows of RGB images, each fitted into a `cell` x `cell` box, with column and row labels."""
    pad, head, side = 4, 26 + (24 if title else 0), 130
    n_cols = len(col_titles)
    img = Image.new("RGB", (side + n_cols * (cell + pad) + pad, head + len(rows) * (cell + pad) + pad), WHITE)
    d = ImageDraw.Draw(img)
    f = font(13)
    if title:
        d.text((pad, 4), title, fill=BLACK, font=font(16))
    for c, name in enumerate(col_titles):
        x = side + pad + c * (cell + pad)
        d.text((x + (cell - _text_width(d, name, f)) / 2, head - 20), name, fill=BLACK, font=f)
    for r, (row, name) in enumerate(zip(rows, row_titles, strict=True)):
        y = head + pad + r * (cell + pad)
        d.text((pad, y + cell / 2 - 8), name, fill=BLACK, font=font(11))
        for c, tile in enumerate(row):
            t = Image.fromarray(tile)
            s = cell / max(t.width, t.height)
            t = t.resize((max(1, round(t.width * s)), max(1, round(t.height * s))), Image.NEAREST)
            x = side + pad + c * (cell + pad)
            img.paste(t, (x + (cell - t.width) // 2, y + (cell - t.height) // 2))
    return img
