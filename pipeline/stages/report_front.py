"""Stage: the report's front page and the training curves.

Writes `front.html`, an HTML fragment: the headline table of `summary.json`, the preset(s), seed,
dataset, commit and resolved config of the run, the class colours and the training-loss curves;
the Snakemake report's landing text includes it (workflow/report/workflow.rst). Writes the curves
also as a PNG, one panel per training run (`--curve NAME=metrics.csv`, the runs' own CSVs).
"""

from __future__ import annotations

import json
import logging

import yaml

from pipeline.cli import parse, stage_parser
from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.palette import VOC_COLORMAP
from pipeline.errors import PipelineError, cli_entry
from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.report.draw import line_panels
from pipeline.report.front import front_html, legend_html, png_data_uri, read_curve, source_commit

log = logging.getLogger("pipeline.stages.report_front")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--summary", required=True, help="summary.json of the summarize stage")
    p.add_argument("--curve", action="append", default=[], metavar="NAME=CSV", help="a training run's metrics CSV")
    p.add_argument("--presets", nargs="*", default=[], help="config files given on the command line, in order")
    p.add_argument("--html", required=True)
    p.add_argument("--curves-png", required=True)
    args, cfg = parse(p, argv)
    try:
        summary = json.loads(open(args.summary).read())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{args.summary}: cannot read the summary ({exc})") from exc
    curves = {}
    for item in args.curve:
        name, sep, path = item.partition("=")
        if not sep:
            raise PipelineError(f"--curve {item!r}: expected NAME=path/to/metrics.csv")
        curves[name] = read_curve(path)
    img = line_panels(curves, title="Training loss per iteration") if curves else None
    if img is not None:
        with atomic_path(args.curves_png) as tmp:
            img.save(tmp, format="PNG")
    else:
        raise PipelineError("report_front: no training run given (--curve NAME=CSV)")
    dataset = cfg.get("dataset", {})
    run = {
        "preset": " + ".join(["config.yaml", *args.presets]),
        "seed": str(cfg.get("seed")),
        "dataset": f"{dataset.get('kind')} at {dataset.get('root')}",
        "methods": ", ".join(r["method"] for r in summary["rows"]),
        "commit": source_commit(),
    }
    legend = legend_html(summary["class_names"], VOC_COLORMAP, IGNORE_INDEX)
    text = front_html(summary, run, legend, png_data_uri(img), yaml.safe_dump(cfg, sort_keys=False))
    write_text_atomic(args.html, text)
    log.info("front page -> %s (%d training curves)", args.html, len(curves))


if __name__ == "__main__":
    main()
