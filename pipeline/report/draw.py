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


def overlay(image: np.ndarray, coloured: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """A colourised mask blended over its image; background (0) leaves the image as it is, so
    objects read against their surroundings."""
    out = blend(image, coloured, alpha)
    keep = mask == 0
    out[keep] = image[keep]
    return out


def legend(names: Sequence[str], colours: np.ndarray, width: int = 900, extra: Sequence[tuple[str, tuple]] = ()
           ) -> Image.Image:
    """Colour swatches with class names, wrapped into rows `width` wide (`colours[i]` is class i's RGB)."""
    entries = [(n, tuple(int(v) for v in colours[i])) for i, n in enumerate(names)] + list(extra)
    f = font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x, y, pad, row_h = 8, 8, 8, 22
    places = []
    for name, colour in entries:
        w = 18 + 6 + _text_width(probe, name, f) + 16
        if x + w > width and x > 8:
            x, y = 8, y + row_h
        places.append((x, y, name, colour))
        x += w
    img = Image.new("RGB", (width, y + row_h + pad), WHITE)
    d = ImageDraw.Draw(img)
    for x, y, name, colour in places:
        d.rectangle([x, y + 2, x + 16, y + 16], fill=colour, outline=BLACK)
        d.text((x + 22, y + 1), name, fill=BLACK, font=f)
    return img


def stack(parts: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Images one below the other, left-aligned, on white."""
    width = max(p.width for p in parts)
    img = Image.new("RGB", (width, sum(p.height for p in parts) + gap * (len(parts) - 1)), WHITE)
    y = 0
    for p in parts:
        img.paste(p, (0, y))
        y += p.height + gap
    return img


def line_panels(series: Mapping[str, Sequence[tuple[float, float]]], ylabel: str = "loss", columns: int = 3,
                panel: tuple[int, int] = (300, 180), title: str = "") -> Image.Image:
    """One small line plot per named series of (x, y) points, each with its own y range (the
    losses of different trainings differ in scale), in a grid `columns` wide."""
    names = list(series)
    cols = max(1, min(columns, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    pw, ph = panel
    head = 30 if title else 0
    img = Image.new("RGB", (cols * pw, head + rows * ph), WHITE)
    d = ImageDraw.Draw(img)
    f, fs = font(13), font(11)
    if title:
        d.text((8, 6), title, fill=BLACK, font=font(16))
    for i, name in enumerate(names):
        ox, oy = (i % cols) * pw, head + (i // cols) * ph
        left, top, right, bottom = ox + 52, oy + 24, ox + pw - 12, oy + ph - 26
        d.text((ox + 8, oy + 4), name, fill=BLACK, font=f)
        pts = [(float(x), float(y)) for x, y in series[name] if y is not None and math.isfinite(float(y))]
        d.rectangle([left, top, right, bottom], outline=GREY)
        if not pts:
            d.text((left + 8, top + 8), "no data", fill=(120, 120, 120), font=fs)
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        for v, y in ((y1, top), (y0, bottom)):
            label = f"{v:.3g}"
            d.text((left - 6 - _text_width(d, label, fs), y - 7), label, fill=BLACK, font=fs)
        d.text((left, bottom + 6), f"{x0:g}", fill=BLACK, font=fs)
        end = f"{x1:g} it"
        d.text((right - _text_width(d, end, fs), bottom + 6), end, fill=BLACK, font=fs)
        d.text((ox + 4, top + (bottom - top) / 2 - 7), ylabel, fill=(90, 90, 90), font=fs)
        xy = [(left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))
              for x, y in pts]
        if len(xy) == 1:
            d.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=SERIES_COLOURS[0])
            continue
        d.line(xy, fill=(170, 200, 230), width=1)
        # a centred moving average over ~5% of the run: the trend through per-batch noise
        k = max(1, len(ys) // 20)
        smooth = np.convolve(np.pad(np.asarray(ys), k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), "valid")
        d.line([(x, bottom - (y - y0) / (y1 - y0) * (bottom - top)) for (x, _), y in zip(xy, smooth, strict=True)],
               fill=SERIES_COLOURS[0], width=2)
    return img
