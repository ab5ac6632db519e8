"""Self-contained HTML tables for the Snakemake report (it shows HTML results inline)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 12px; }
table { border-collapse: collapse; margin: 8px 0 24px 0; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 4px 0; }
p.note { color: #444; max-width: 70em; }
"""


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(caption: str, header: Sequence[str], rows: Sequence[Sequence], digits: int = 3) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v, digits))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def page(title: str, parts: Sequence[str], note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h2>{html.escape(title)}</h2>{note_html}{''.join(parts)}</body></html>\n")
