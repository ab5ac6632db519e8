"""Stage: the summary table over every method and the fully supervised ceiling.

One row per method: seed mIoU (eval_cam), pseudo-mask mIoU before / after the CRF (eval_masks) and,
for CAM methods, of IRN's random-walk masks (eval_rw_masks),
final val mIoU before / after the CRF (eval_deeplab), mean co-occurrence confusion at each stage,
context false activation (seeds on the training images; final model on the decoupled split),
and the ratio of the final mIoU to the ceiling's (DeepLab trained on the GT masks of the same
images). Writes summary.tsv / summary.json, the per-class IoU table (TSV + HTML), the summary
as HTML and per-class IoU bar charts (PNG) for the report.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pipeline.cli import parse_cfg, setup_logging, stage_parser
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_summary
from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.report import html
from pipeline.report.draw import bar_chart

log = logging.getLogger("pipeline.stages.summarize")

COLUMNS = ("method", "seed_miou", "mask_miou", "mask_crf_miou", "mask_crf_uncertain", "mask_rw_miou", "val_miou",
           "val_crf_miou",
           "ratio_to_ceiling", "ratio_to_ceiling_raw", "cooc_seed", "cooc_mask", "cooc_val",
           "context_fa_seed", "context_fa_decoupled")


def _load(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read evaluation JSON ({exc})") from exc


def _get(d: dict | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def method_row(method: str, seed: dict | None, masks: dict | None, final: dict) -> dict[str, Any]:
    return {
        "method": method,
        "seed_miou": _get(seed, "miou"),
        "mask_miou": _get(masks, "raw", "miou"),
        "mask_crf_miou": _get(masks, "crf", "miou"),
        "mask_crf_uncertain": _get(masks, "crf", "uncertain_fraction"),
        "mask_rw_miou": None,  # IRN's random-walk masks (CAM methods): build_summary fills it in
        "val_miou": _get(final, "val", "raw", "miou"),
        "val_crf_miou": _get(final, "val", "crf", "miou"),
        # pooled over the co-occurring pairs (sum of confused pixels / sum of true positives): the
        # mean of per-pair ratios is unbounded when one class has few true positives
        "cooc_seed": _get(seed, "cooccurrence_confusion_pooled"),
        "cooc_mask": _get(masks, "crf", "cooccurrence_confusion_pooled"),
        "cooc_val": _get(final, "val", "crf", "cooccurrence_confusion_pooled"),
        "context_fa_seed": _get(seed, "context_false_activation_mean"),
        "context_fa_decoupled": _get(final, "decoupled", "crf", "context_false_activation_mean"),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(b):
        return None
    return a / b


def add_ceiling_ratios(rows: list[dict[str, Any]], ceiling: dict[str, Any]) -> None:
    """Every row's final mIoU divided by the ceiling's (after and before the CRF)."""
    for row in rows:
        row["ratio_to_ceiling"] = _ratio(row["val_crf_miou"], ceiling["val_crf_miou"])
        row["ratio_to_ceiling_raw"] = _ratio(row["val_miou"], ceiling["val_miou"])


def build_summary(methods: list[str], seeds: list[dict], masks: list[dict], finals: list[dict],
                  ceiling_method: str, ceiling: dict, rw: dict[str, dict] | None = None) -> dict[str, Any]:
    """`rw`: eval_rw.json per CAM method (IRN's random-walk masks), by method."""
    if not len(methods) == len(seeds) == len(masks) == len(finals):
        raise PipelineError("summarize: --methods, --seed-evals, --mask-evals and --final-evals must align")
    rows = [method_row(m, s, k, f) for m, s, k, f in zip(methods, seeds, masks, finals, strict=True)]
    for row in rows:
        row["mask_rw_miou"] = _get((rw or {}).get(row["method"]), "rw", "miou")
    ceiling_row = method_row(ceiling_method, None, None, ceiling)
    rows.append(ceiling_row)
    add_ceiling_ratios(rows, ceiling_row)
    per_class: dict[str, dict[str, dict]] = {"seed": {}, "mask": {}, "mask_crf": {}, "val": {}, "val_crf": {}}
    cooc: dict[str, dict[str, dict]] = {}
    for m, s, k, f in zip([*methods, ceiling_method], [*seeds, None], [*masks, None], [*finals, ceiling], strict=True):
        for stage, src in (("seed", _get(s, "per_class_iou")), ("mask", _get(k, "raw", "per_class_iou")),
                           ("mask_crf", _get(k, "crf", "per_class_iou")), ("val", _get(f, "val", "raw", "per_class_iou")),
                           ("val_crf", _get(f, "val", "crf", "per_class_iou"))):
            if src is not None:
                per_class[stage][m] = src
        cooc[m] = {stage: v for stage, v in (("seed", _get(s, "cooccurrence_confusion")),
                                            ("mask_crf", _get(k, "crf", "cooccurrence_confusion")),
                                            ("val_crf", _get(f, "val", "crf", "cooccurrence_confusion"))) if v is not None}
    context = {m: {"seed": _get(s, "context_false_activation"),
                   "decoupled": _get(f, "decoupled", "crf", "context_false_activation")}
               for m, s, f in zip([*methods, ceiling_method], [*seeds, None], [*finals, ceiling], strict=True)}
    # Class order of the dataset (the JSON files store per-class dicts with sorted keys).
    class_names = ceiling.get("class_names") or sorted({c for t in per_class["val_crf"].values() for c in t})
    return {"columns": list(COLUMNS), "rows": rows, "ceiling": ceiling_method, "class_names": class_names,
            "per_class_iou": per_class, "cooccurrence_confusion": cooc, "context_false_activation": context}


def _tsv_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def summary_tsv(summary: dict) -> str:
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(_tsv_value(row[c]) for c in COLUMNS) for row in summary["rows"]]
    return "\n".join(lines) + "\n"


def per_class_tsv(summary: dict) -> str:
    cols = [(stage, m) for stage in ("mask_crf", "val_crf") for m in summary["per_class_iou"][stage]]
    lines = ["\t".join(["class", *(f"{m}:{stage}" for stage, m in cols)])]
    for name in summary["class_names"]:
        lines.append("\t".join([name, *(_tsv_value(summary["per_class_iou"][s][m].get(name)) for s, m in cols)]))
    return "\n".join(lines) + "\n"


STAGE_TITLES = {"seed": "CAM seeds (eval split)", "mask": "pseudo masks before CRF (eval split)",
                "mask_crf": "pseudo masks after CRF (eval split)", "val": "final DeepLab before CRF (val)",
                "val_crf": "final DeepLab after CRF (val)"}


# Short headers for the HTML table (the TSV keeps the column names).
HTML_HEADERS = {"seed_miou": "seed", "mask_miou": "mask", "mask_crf_miou": "mask+CRF", "mask_crf_uncertain": "uncertain",
                "mask_rw_miou": "mask (random walk)",
                "val_miou": "val", "val_crf_miou": "val+CRF", "ratio_to_ceiling": "÷ceiling",
                "ratio_to_ceiling_raw": "÷ceiling (no CRF)", "cooc_seed": "co-occ. seed", "cooc_mask": "co-occ. mask",
                "cooc_val": "co-occ. val", "context_fa_seed": "context FA seed",
                "context_fa_decoupled": "context FA decoupled"}


def summary_html(summary: dict) -> str:
    rows = [[row[c] for c in COLUMNS] for row in summary["rows"]]
    header = [HTML_HEADERS.get(c, c) for c in COLUMNS]
    parts = [html.table("Summary (mIoU; ratios to the fully supervised ceiling)", header, rows)]
    pairs = sorted({p for m in summary["cooccurrence_confusion"].values() for st in m.values() for p in st})
    cols = [(m, st) for m, stages in summary["cooccurrence_confusion"].items() for st in stages]
    parts.append(html.table("Co-occurrence confusion (pixels of k predicted as c / true positives of c)",
                            ["pair c->k", *(f"{m} {st}" for m, st in cols)],
                            [[p, *(summary["cooccurrence_confusion"][m][st].get(p) for m, st in cols)] for p in pairs]))
    ctx = summary["context_false_activation"]
    names = sorted({n for m in ctx.values() for v in m.values() if v for n in v})
    if names:
        cols2 = [(m, st) for m in ctx for st in ("seed", "decoupled") if ctx[m][st]]
        parts.append(html.table("Context false activation (context pixels predicted as their usual object)",
                                ["context", *(f"{m} {st}" for m, st in cols2)],
                                [[n, *(ctx[m][st].get(n) for m, st in cols2)] for n in names]))
    note = ("mIoU of the CAM seeds (eval split), pseudo masks (eval split) and final DeepLab (val split), before "
            f"and after the dense CRF; ÷ceiling = val mIoU / that of '{summary['ceiling']}' (the same DeepLab on GT "
            "masks); uncertain = fraction of pseudo-mask pixels left uncertain (255); co-occ. = co-occurrence "
            "confusion, pooled over the co-occurring pairs (Σ pixels of k predicted as c / Σ true positives of c); context FA = context false activation (seeds: training images; final: decoupled split).")
    return html.page("WSSS summary", parts, note)


def per_class_html(summary: dict) -> str:
    names = summary["class_names"]
    parts = []
    for stage, tables in summary["per_class_iou"].items():
        if tables:
            methods = list(tables)
            parts.append(html.table(f"Per-class IoU: {STAGE_TITLES[stage]}", ["class", *methods],
                                    [[n, *(tables[m].get(n) for m in methods)] for n in names]))
    return html.page("Per-class IoU", parts)


def _save_png(img, path: str) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--methods", nargs="*", default=[], help="methods with seeds, in order")
    p.add_argument("--seed-evals", nargs="*", default=[], help="eval_cam.json per method")
    p.add_argument("--mask-evals", nargs="*", default=[], help="eval_masks.json per method")
    p.add_argument("--rw-evals", nargs="*", default=[], help="eval_rw.json per CAM method (IRN's random walk)")
    p.add_argument("--final-evals", nargs="*", default=[], help="eval_deeplab.json per method")
    p.add_argument("--ceiling", required=True, help="eval_deeplab.json of the GT-trained DeepLab")
    p.add_argument("--ceiling-method", default="gt")
    p.add_argument("--tsv", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--classes-tsv", required=True)
    p.add_argument("--html", required=True)
    p.add_argument("--classes-html", required=True)
    p.add_argument("--chart-val", required=True)
    p.add_argument("--chart-mask", required=True)
    args = p.parse_args(argv)
    setup_logging()
    parse_cfg(args.cfg)
    summary = build_summary(args.methods, [_load(x) for x in args.seed_evals], [_load(x) for x in args.mask_evals],
                            [_load(x) for x in args.final_evals], args.ceiling_method, _load(args.ceiling),
                            {d["method"]: d for d in map(_load, args.rw_evals)})
    write_summary(args.json, summary)
    write_text_atomic(args.tsv, summary_tsv(summary))
    write_text_atomic(args.classes_tsv, per_class_tsv(summary))
    write_text_atomic(args.html, summary_html(summary))
    write_text_atomic(args.classes_html, per_class_html(summary))
    names = summary["class_names"]
    for stage, path, title in (("val_crf", args.chart_val, "Per-class IoU of the final DeepLab (val, after CRF)"),
                               ("mask_crf", args.chart_mask, "Per-class IoU of the pseudo masks (eval split, after CRF)")):
        tables = summary["per_class_iou"][stage]
        _save_png(bar_chart(names, {m: [t.get(n) for n in names] for m, t in tables.items()}, title), path)
    for row in summary["rows"]:
        log.info("%-10s seed %s  mask %s -> %s  val %s -> %s  ratio %s", row["method"],
                 *(html.fmt(row[c]) for c in ("seed_miou", "mask_miou", "mask_crf_miou", "val_miou", "val_crf_miou",
                                               "ratio_to_ceiling")))


if __name__ == "__main__":
    main()
