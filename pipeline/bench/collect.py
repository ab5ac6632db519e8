"""Figures of one finished DAG run, read from the files its stages wrote.

A run directory is Snakemake's working directory: `results/` (artifacts and evaluation JSON),
`benchmarks/<rule>/...tsv` (Snakemake's per-job wall time, CPU time and peak RSS) and
`logs/<rule>/...log` (the stages' own throughput lines). Nothing here recomputes a figure a
stage already wrote.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py

from pipeline.errors import PipelineError

# Throughput lines of the stages (make_cam, infer_seco, infer_deeplab, export_masks, crf_stage).
_RATE = re.compile(r"(\d+) (?:images|masks)\b.* in ([\d.]+)s.*?\(([\d.]+) images/s\)|"
                   r": (\d+) images in ([\d.]+)s on (\d+) process\(es\): ([\d.]+) images/s")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read ({exc})") from exc


def stage_times(run: Path) -> dict[str, dict[str, float]]:
    """Per rule: summed wall seconds and CPU seconds over its jobs, the largest peak RSS (MB), jobs."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"wall_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0, "jobs": 0})
    for tsv in sorted((run / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(run / "benchmarks").parts[0]
        with tsv.open() as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                rec = out[rule]
                rec["wall_s"] += float(row["s"])
                rec["cpu_s"] += _float(row.get("cpu_time"))
                rec["max_rss_mb"] = max(rec["max_rss_mb"], _float(row.get("max_rss")))
                rec["jobs"] += 1
    return dict(out)


def _float(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "", "-", "NA") else 0.0
    except ValueError:
        return 0.0


def throughput(run: Path) -> dict[str, dict[str, float]]:
    """Images/s per log file of the inference-like stages, keyed `<rule>/<method>`.

    Several lines in one log (ranks, shards) are pooled: images over seconds.
    """
    out: dict[str, dict[str, float]] = {}
    for rule in ("make_cam", "infer_seco", "infer_deeplab", "export_masks", "crf_masks", "crf_predictions"):
        logs = defaultdict(list)
        for log in sorted((run / "logs" / rule).rglob("*.log")) if (run / "logs" / rule).is_dir() else []:
            rel = log.relative_to(run / "logs" / rule)
            method = rel.parts[0] if len(rel.parts) > 1 else rel.stem
            logs[method].append(log)
        for method, files in logs.items():
            images, seconds = 0, 0.0
            for f in files:
                for m in _RATE.finditer(f.read_text(errors="replace")):
                    n, s, rate = (m.group(1, 2, 3) if m.group(1) else m.group(4, 5, 7))
                    # The logged seconds are rounded to 0.1 s; the logged rate is the finer figure.
                    images += int(n)
                    seconds += int(n) / float(rate) if float(rate) > 0 else float(s)
            if images and seconds > 0:
                out[f"{rule}/{method}"] = {"images": images, "seconds": seconds, "images_per_s": images / seconds}
    return out


def training_rates(run: Path) -> dict[str, dict[str, float]]:
    """Iterations/s per training run from the trainer's metrics CSV (cumulative `seconds` column).

    The first iteration is left out: it carries start-up (allocations, first data batch).
    """
    out = {}
    for csv_path in sorted((run / "results" / "runs").glob("*/*/metrics.csv")):
        with csv_path.open() as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) < 3:
            continue
        it0, t0 = int(rows[0]["iteration"]), float(rows[0]["seconds"])
        it1, t1 = int(rows[-1]["iteration"]), float(rows[-1]["seconds"])
        key = f"{csv_path.parent.parent.name}/{csv_path.parent.name}"
        out[key] = {"iterations": it1 + 1, "seconds": t1, "it_per_s": (it1 - it0) / max(t1 - t0, 1e-9)}
    return out


def storage(run: Path) -> list[dict[str, Any]]:
    """Bytes per image pixel of every HDF5 artifact (file size over the summed original sizes)."""
    rows = []
    for path in sorted((run / "results").rglob("*.h5")):
        if "shard" in path.name or "crf_shards" in path.parts:
            continue
        with h5py.File(path, "r") as f:
            kind = str(f.attrs.get("artifact", "?"))
            entries = [f[name].attrs for name in f]
            sizes = [a["orig_size"] for a in entries if "orig_size" in a]
            pixels = sum(int(h) * int(w) for h, w in sizes)
            stride = sorted({int(a["stride"]) for a in entries if "stride" in a})
        nbytes = path.stat().st_size
        rows.append({"path": str(path.relative_to(run)), "artifact": kind, "images": len(entries),
                     "bytes": nbytes, "pixels": pixels, "bytes_per_pixel": nbytes / pixels if pixels else None,
                     "stride": stride})
    return rows


def quality(run: Path) -> dict[str, Any]:
    """The summary stage's rows and per-pair co-occurrence confusion, plus SeCo's cache check."""
    summary = read_json(run / "results" / "summary.json")
    out: dict[str, Any] = {"methods": [r["method"] for r in summary["rows"]],
                           "rows": {r["method"]: r for r in summary["rows"]},
                           "cooccurrence_confusion": summary["cooccurrence_confusion"],
                           "context_false_activation": summary["context_false_activation"],
                           "ceiling": summary["ceiling"]}
    seco_infer = run / "results" / "seco" / "infer_metrics.json"
    if seco_infer.exists():
        out["seco_cache"] = read_json(seco_infer)
    out["context_by_stage"] = context_by_stage(run, out["rows"])
    return out


# Where the context false activation of each method arises: its seeds, its masks before and after
# the CRF (training images, context beside its object), the final DeepLab on val (the same), and on
# the decoupled split (the context without its object).
CONTEXT_STAGES = ("seed", "mask", "mask_crf", "final_val", "final_decoupled")


def _context_fa(evaluation: dict, *keys: str) -> float | None:
    """The mean context false activation under `keys` of an evaluation JSON ({} when it is absent)."""
    for k in keys:
        evaluation = evaluation.get(k) or {}
    return evaluation.get("context_false_activation_mean")


def context_by_stage(run: Path, rows: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    """Mean context false activation per method and stage (CONTEXT_STAGES), from the evaluation JSON
    the stages wrote; None where a stage has no such figure (the GT masks, a method without masks)."""
    res = run / "results"
    out = {}
    for m, row in rows.items():
        if m == "gt":
            continue
        masks = res / "masks" / m / "eval_masks.json"
        final = res / "deeplab" / m / "eval_deeplab.json"
        mk = read_json(masks) if masks.exists() else {}
        dl = read_json(final) if final.exists() else {}
        out[m] = dict(zip(CONTEXT_STAGES, (row.get("context_fa_seed"), _context_fa(mk, "raw"), _context_fa(mk, "crf"),
                                           _context_fa(dl, "val", "crf"), _context_fa(dl, "decoupled", "crf")), strict=True))
    return out


# timm's line when a training stage loads `pretrained: <file>` (pipeline.models factory).
_LOADED = re.compile(r"Loading pretrained weights from file \((.+?)\)")


def loaded_weights(run: Path, section: str) -> Path | None:
    """The weight file the run's `train_<section>` jobs loaded, from their logs; None if none did."""
    logs = run / "logs" / f"train_{section}"
    for log in sorted(logs.rglob("*.log")) if logs.is_dir() else []:
        m = _LOADED.search(log.read_text(errors="replace"))
        if m:
            return Path(m.group(1))
    return None


def pretraining(cfg: dict, run: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per pretraining job the config asks for (`pretrained: pretrain`): its held-out accuracy on the
    corpus and its training seconds, read from the shared cache (the job may have run in another run
    directory, or in none of this benchmark's). The cache folder is the one `run`'s training logs
    name when they do: a run made by older code used the weights of that code's cache key, which
    today's resolution no longer gives. {} in the from-scratch regime."""
    import copy

    from pipeline.bench.measure import REPO
    from pipeline.pretrain import cache
    from pipeline.provenance import stage_code_hash

    codes = [stage_code_hash(f"pipeline.stages.{m}", str(REPO / "pipeline")) for m in ("make_pretrain_corpus", "pretrain")]
    jobs = cache.resolve(copy.deepcopy(cfg), REPO, *codes)
    out: dict[str, dict[str, Any]] = {}
    for job in jobs.values():
        used = next((w for s in job["sections"] if (w := loaded_weights(run, s))), None) if run else None
        folder = (used or Path(job["weights"])).parent
        rec: dict[str, Any] = {"sections": job["sections"], "seconds": None, "top1": None, "top5": None}
        metrics = folder / cache.RUN / "metrics.csv"
        if metrics.exists():
            with metrics.open() as fh:
                rows = list(csv.DictReader(fh))
            rec["seconds"] = float(rows[-1]["seconds"]) if rows else None
        if (folder / cache.EVAL).exists():
            ev = read_json(folder / cache.EVAL)
            rec.update(top1=ev.get("top1"), top5=ev.get("top5"), num_classes=ev.get("num_classes"),
                       iterations=ev.get("iterations"))
        out[folder.name] = rec
    return out
