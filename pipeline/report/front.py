"""The report's front page: headline table, the run's preset, seed, commit and config, the class
colours and the training curves, as one HTML fragment (the Snakemake report's landing text
includes it; it also opens on its own)."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.report.html import fmt

REPO = Path(__file__).resolve().parents[2]

# (summary column, header): the figures a reader compares first.
HEADLINE = (("seed_miou", "seeds"), ("mask_crf_miou", "masks (+CRF)"), ("mask_rw_miou", "masks (random walk)"),
            ("val_crf_miou", "final (+CRF)"),
            ("ratio_to_ceiling", "÷ ceiling"), ("cooc_val", "co-occ. final"),
            ("context_fa_decoupled", "context FA"))
# Ratios above this are shown as "> cap": a collapsed class or a near-zero ceiling makes them
# meaningless, and an unbounded number draws the eye away from the table.
RATIO_CAP = 10.0
RATIO_COLUMNS = {"ratio_to_ceiling", "cooc_val"}


def source_commit(repo: Path = REPO) -> str:
    """`<short hash>` of the checkout the stages ran from, `+ local changes` when tracked files
    differ from it, `unknown` outside git."""
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    head = git("rev-parse", "--short=12", "HEAD")
    if not head:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head} + local changes" if dirty else head


def display(value: Any, column: str) -> str:
    if column in RATIO_COLUMNS and isinstance(value, float) and math.isfinite(value) and value > RATIO_CAP:
        return f"> {RATIO_CAP:g}"
    return fmt(value)


def read_curve(path: str | Path, column: str = "loss") -> list[tuple[float, float]]:
    """(iteration, `column`) pairs of a training metrics CSV; [] if it or the column is missing."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    out = []
    for row in rows:
        try:
            out.append((float(row["iteration"]), float(row[column])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def png_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def legend_html(class_names: Sequence[str], colours: np.ndarray, ignore_index: int) -> str:
    items = [(n, colours[i]) for i, n in enumerate(class_names)] + [("uncertain / ignored", colours[ignore_index])]
    spans = "".join(
        f'<span style="display:inline-block;margin:2px 10px 2px 0;white-space:nowrap">'
        f'<span style="display:inline-block;width:12px;height:12px;border:1px solid #000;vertical-align:middle;'
        f'background:rgb({int(c[0])},{int(c[1])},{int(c[2])})"></span> {html.escape(n)}</span>'
        for n, c in items)
    return f"<div>{spans}</div>"


def front_html(summary: Mapping[str, Any], run: Mapping[str, str], legend: str, curves_uri: str | None,
               config_text: str) -> str:
    """The front page fragment. `run`: label -> value lines (preset, seed, commit, ...)."""
    cell = 'style="border:1px solid #bbb;padding:2px 6px;text-align:right"'
    left = 'style="border:1px solid #bbb;padding:2px 6px;text-align:left"'
    head = "".join(f"<th {cell}>{html.escape(h)}</th>" for _, h in HEADLINE)
    body = ""
    for row in summary["rows"]:
        name = row["method"] + (" (ceiling)" if row["method"] == summary.get("ceiling") else "")
        body += (f"<tr><td {left}>{html.escape(name)}</td>"
                 + "".join(f"<td {cell}>{html.escape(display(row.get(c), c))}</td>" for c, _ in HEADLINE) + "</tr>")
    runs = "".join(f"<li><b>{html.escape(k)}:</b> {html.escape(v)}</li>" for k, v in run.items())
    curves = (f'<h4>Training curves</h4><img alt="training curves" style="max-width:100%" src="{curves_uri}">'
              if curves_uri else "")
    return (
        '<div class="wsss-front">'
        "<h3>Headline</h3>"
        f'<table style="border-collapse:collapse"><tr><th {left}>method</th>{head}</tr>{body}</table>'
        '<p style="font-size:90%;color:#444">mIoU: seeds and masks on the evaluation (training) images, final '
        "DeepLab on val, each after the dense CRF; masks (random walk): IRN's IRNet masks of the CAM methods. ÷ ceiling: final mIoU over the same DeepLab trained on the GT masks. "
        "co-occ.: pixels of a class's usual partner predicted as the class, summed over the co-occurring pairs, over "
        "the summed true positives (pooled; the per-pair table is in the Summary). context FA: context pixels predicted "
        f"as their usual object on the decoupled split. Ratios above {RATIO_CAP:g} show as &gt; {RATIO_CAP:g}. "
        "Full table, per-class IoU and qualitative rows: the report's result categories.</p>"
        f"<h4>Run</h4><ul>{runs}</ul>"
        f"<h4>Class colours</h4>{legend}"
        f"{curves}"
        f"<details><summary>Resolved config</summary><pre style=\"font-size:85%\">{html.escape(config_text)}</pre>"
        "</details></div>\n"
    )
