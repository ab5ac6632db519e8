"""Render docs/BENCHMARKS.md from the figures `pipeline.bench.run` recorded (bench.json)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from pipeline.bench.collect import CONTEXT_STAGES

QUALITY = (("seed_miou", "seed"), ("mask_miou", "mask"), ("mask_crf_miou", "mask+CRF"),
           ("mask_rw_miou", "mask RW"), ("val_miou", "final"),
           ("val_crf_miou", "final+CRF"), ("ratio_to_ceiling", "÷ceiling"), ("cooc_seed", "co-occ. seed"),
           ("cooc_val", "co-occ. final"), ("context_fa_seed", "ctx FA seed"),
           ("context_fa_decoupled", "ctx FA decoupled"))
GPU_COMMAND = "python -m pipeline.bench.gpu --out results/bench/gpu.json"


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def mean_std(values: list[Any], digits: int = 3) -> str:
    vals = [x for x in (_num(v) for v in values) if x is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _mean(values: list[Any]) -> float | None:
    vals = [x for x in (_num(v) for v in values) if x is not None]
    return statistics.mean(vals) if vals else None


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _fmt(v: Any, digits: int = 2) -> str:
    v = _num(v) if not isinstance(v, str) else v
    return "–" if v is None else (v if isinstance(v, str) else f"{v:.{digits}f}")


def _seeds(p: dict) -> list[dict]:
    return list(p["seeds"].values())


def methods_of(p: dict) -> list[str]:
    return list(_seeds(p)[0]["quality"]["methods"])


def quality_section(name: str, p: dict) -> list[str]:
    seeds = _seeds(p)
    out = [f"### Quality: `{name}` ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: {', '.join(p['seeds'])})", "",
           *provenance_line(p)]
    out.append("mIoU of the CAM seeds and pseudo masks (training images) and of the final DeepLab (val), before "
               "and after the dense CRF; mask RW = IRN's random-walk masks of the CAM methods (DeepLab trains on "
               "the mask named by `masks.methods.<m>.refine`); ÷ceiling = final+CRF over the DeepLab trained on GT masks of the same "
               "images; co-occ. = co-occurrence confusion pooled over the co-occurring pairs (Σ pixels of k predicted as c / Σ true positives of c); ctx FA = context false activation. "
               "Mean ± sample standard deviation over seeds."
               + (" The instant-test preset trains for seconds: smoke-test values, not results." if name in SMOKE_PRESETS
                  else ""))
    out.append("")
    rows = []
    for m in methods_of(p):
        rows.append([m, *(mean_std([s["quality"]["rows"][m].get(k) for s in seeds]) for k, _ in QUALITY)])
    out += _table(["method", *(h for _, h in QUALITY)], rows)
    for job, rec in (p.get("pretraining") or {}).items():
        out += [f"Pretrained weights `{job}` ({', '.join(rec['sections'])}): held-out top-1 {_fmt(rec.get('top1'), 3)}, "
                f"top-5 {_fmt(rec.get('top5'), 3)} over {rec.get('num_classes', '–')} corpus classes, "
                f"{rec.get('iterations', '–')} iterations, {_fmt(rec.get('seconds'), 0)} s.", ""]
    pairs = sorted({pair for s in seeds for m in s["quality"]["cooccurrence_confusion"].values()
                    for st in m.values() for pair in st})
    stages = (("seed", "seed"), ("val_crf", "final"))
    cols = [(m, st, label) for m in methods_of(p) for st, label in stages]
    cc = [s["quality"]["cooccurrence_confusion"] for s in seeds]
    out += ["Co-occurrence confusion ratio per co-occurring pair c→k (pixels of k predicted as c over the true "
            "positives of c):", ""]
    out += _table(["pair", *(f"{m} {label}" for m, _, label in cols)],
                  [[pair, *(mean_std([c.get(m, {}).get(st, {}).get(pair) for c in cc], 2) for m, st, _ in cols)]
                   for pair in pairs])
    return out


def speed_section(name: str, p: dict) -> list[str]:
    seeds = _seeds(p)
    out = [f"### Speed: `{name}`", ""]
    dags = [s["dag"] for s in seeds if s.get("dag")]
    if dags:
        out.append("Whole DAG, wall time per seed: " + ", ".join(f"{d['wall_s'] / 60:.1f} min ({d['jobs']} jobs)"
                                                                 for d in dags) + f". Command: `{dags[0]['command']}`.")
        updates = [(seed, u) for seed, s in p["seeds"].items() if s.get("dag") for u in s["dag"].get("updates", [])]
        if updates:
            out.append("Updated in place afterwards (`--update`, an incremental Snakemake rerun after a config or code "
                       "change; the quality figures are the updated ones): " + ", ".join(
                           f"seed {seed} on {u['date']}: {u['jobs']} jobs, {u['wall_s'] / 60:.1f} min" for seed, u in updates) + ".")
    else:
        out.append("Whole DAG wall time: not measured (run directories were reused with `--skip-dag`).")
    out.append("")
    rules = sorted({r for s in seeds for r in s["stages"]},
                   key=lambda r: (-(_mean([s["stages"].get(r, {}).get("wall_s") for s in seeds]) or 0), r))
    out.append("Per rule (Snakemake `benchmark:` files; summed over the rule's jobs, mean over seeds):")
    out.append("")
    out += _table(["rule", "jobs", "wall s", "CPU s", "peak RSS MB"],
                  [[r, int(seeds[0]["stages"].get(r, {}).get("jobs", 0)),
                    *(_fmt(_mean([s["stages"].get(r, {}).get(k) for s in seeds]), 1)
                      for k in ("wall_s", "cpu_s", "max_rss_mb"))] for r in rules])
    keys = sorted({k for s in seeds for k in s["throughput"]})
    out.append("Throughput (the stages' own log lines, images/s; mean over seeds):")
    out.append("")
    out += _table(["stage/method", "images", "images/s"],
                  [[k, seeds[0]["throughput"].get(k, {}).get("images", "–"),
                    _fmt(_mean([s["throughput"].get(k, {}).get("images_per_s") for s in seeds]), 2)] for k in keys])
    keys = sorted({k for s in seeds for k in s["training"]})
    out.append("Training (trainer metrics CSV, first iteration excluded):")
    out.append("")
    out += _table(["run", "iterations", "it/s", "s/it"],
                  [[k, seeds[0]["training"].get(k, {}).get("iterations", "–"),
                    _fmt(_mean([s["training"].get(k, {}).get("it_per_s") for s in seeds]), 2),
                    _fmt(1 / v if (v := _mean([s["training"].get(k, {}).get("it_per_s") for s in seeds])) else None, 3)]
                   for k in keys])
    crf = p.get("crf")
    if crf:
        rates = crf["images_per_s"]
        out.append(f"Dense CRF (`pipeline.stages.crf`, {crf['method']} masks, {crf['images']} images, best of "
                   f"{crf['repeats']} alternated runs): " + "; ".join(
                       f"{k} process(es) {_fmt(v)} images/s (×{_fmt(crf['speedup'][k])})" for k, v in rates.items()) + ".")
        out.append("")
    noop = p.get("noop")
    if noop:
        out.append(f"No-op rerun after the full run: {noop['jobs']} jobs, {noop['wall_s']:.1f} s (`{noop['command']}`).")
        out.append("")
    return out


def storage_section(name: str, p: dict) -> list[str]:
    out = [f"### Storage: `{name}` (seed {next(iter(p['seeds']))})", ""]
    out += _table(["artifact file", "kind", "images", "stride", "bytes", "bytes / image pixel"],
                  [[r["path"], r["artifact"], r["images"], ",".join(map(str, r["stride"])) or "–", r["bytes"],
                    _fmt(r["bytes_per_pixel"], 3)] for r in p["storage"]])
    cam = p.get("cam_cache")
    if cam and cam.get("reference") == "high_res":
        out.append(f"CAM cache (float16 cells at stride {cam['cam_stride']} fitted to IRN's `high_res`, upsampled on "
                   f"read) vs the same network's `high_res` in float32, {cam['images']} eval images, seed mIoU at "
                   f"threshold {cam['bg_threshold']} (convention `{cam['miou_convention']}`): "
                   f"{cam['cache_miou']:.4f} vs {cam['full_res_miou']:.4f} (loss {cam['loss_points']:.3f} points), "
                   f"{cam['bytes_per_pixel']:.3f} bytes/pixel; IRN's stride-{cam['cam_stride']} `cam` upsampled "
                   f"on read instead (the former cache): {cam['strided_upsampled_miou']:.4f} "
                   f"(`python -m pipeline.bench.run --remeasure cam_cache`).")
        out.append("")
    elif cam:  # recorded before the check measured against high_res
        out.append(f"CAM cache (float16, stride {cam['cam_stride']}, upsampled on read) vs the same network's CAMs "
                   f"at full resolution in float32, {cam['images']} images, seed mIoU at threshold "
                   f"{cam['bg_threshold']}: {cam['cache_miou']:.4f} vs {cam['full_res_miou']:.4f} "
                   f"(difference {cam['cache_minus_full']:+.4f}).")
        out.append("")
    seco = [s["quality"].get("seco_cache") for s in _seeds(p) if s["quality"].get("seco_cache")]
    if seco:
        c = seco[0]
        out.append(f"SeCo segmentation-logits cache (stride {c['logits_stride']}, float16 with reduced mantissa, "
                   f"gzip) vs full-resolution float32 logits, argmax mIoU (measured by `infer_seco`): "
                   f"{c['bytes_per_pixel']:.3f} bytes/pixel; difference eval "
                   f"{mean_std([s['eval']['cache_minus_full'] for s in seco], 4)}, val "
                   f"{mean_std([s['val']['cache_minus_full'] for s in seco], 4)}.")
        out.append("")
    return out


# The instant-test preset's figures are smoke values (seconds of training): no quality or speed goal.
SMOKE_PRESETS = ("tiny",)


def goals(figures: dict) -> list[list[str]]:
    rows = []
    for name, p in _presets(figures):
        if name in SMOKE_PRESETS:
            continue
        seeds = _seeds(p)
        q = [s["quality"]["rows"] for s in seeds]
        if "seco" in q[0]:
            r = _mean([x["seco"]["ratio_to_ceiling"] for x in q])
            rows.append([f"SeCo final mIoU ≥ 0.92 × ceiling (`{name}`)", _fmt(r, 3), _met(r is not None and r >= 0.92)])
        # each method against the round-1 model it improves on: CSD on MCTformer against MCTformer
        for m, ref in (("seco", "baseline"), ("csd", "baseline"), ("mctformer_csd", "mctformer")):
            if m not in q[0] or ref not in q[0]:
                continue
            base, base_seed = _mean([x[ref]["cooc_val"] for x in q]), _mean([x[ref]["cooc_seed"] for x in q])
            if base:
                v, vs = _mean([x[m]["cooc_val"] for x in q]), _mean([x[m]["cooc_seed"] for x in q])
                rows.append([f"{m} co-occurrence confusion ≤ 0.7 × {ref}'s, final predictions (`{name}`)",
                             f"×{_fmt(v / base)} (seeds: ×{_fmt(vs / base_seed) if vs and base_seed else '–'})",
                             _met(v is not None and v <= 0.7 * base)])
        cache = [s["quality"].get("seco_cache") for s in seeds if s["quality"].get("seco_cache")]
        if cache:
            bpp = max(c["bytes_per_pixel"] for c in cache)
            loss = max(abs(c["val"]["cache_minus_full"]) for c in cache)
            rows.append([f"score cache ≤ 1 B/pixel, mIoU loss ≤ 0.1 points (SeCo logits, `{name}`)",
                         f"{bpp:.3f} B/px, {100 * loss:.3f} points", _met(bpp <= 1 and loss <= 0.001)])
        cam = p.get("cam_cache")
        if cam:
            bpp = cam.get("bytes_per_pixel") or next(
                (r["bytes_per_pixel"] for r in p["storage"] if r["path"].endswith("cam/baseline/cams.h5")), None)
            loss = abs(cam["cache_minus_full"])
            rows.append([f"score cache ≤ 1 B/pixel, mIoU loss ≤ 0.1 points vs float32 high_res (CAM scores, `{name}`)"
                         if cam.get("reference") == "high_res" else
                         f"score cache ≤ 1 B/pixel, mIoU loss ≤ 0.1 points (CAM scores, `{name}`)",
                         f"{_fmt(bpp, 3)} B/px, {100 * loss:.3f} points",
                         _met(bpp is not None and bpp <= 1 and loss <= 0.001)])
        crf = p.get("crf")
        if crf and "2" in {str(k) for k in crf["speedup"]}:
            sp = {str(k): v for k, v in crf["speedup"].items()}["2"]
            rows.append([f"CRF on 2 processes ≥ 1.8 × one (`{name}`)", f"×{sp:.2f}", _met(sp >= 1.8)])
        noop = p.get("noop")
        if noop:
            rows.append([f"no-op rerun ≤ 5 s with 0 jobs (`{name}`)", f"{noop['wall_s']:.1f} s, {noop['jobs']} jobs",
                         _met(noop["wall_s"] <= 5 and noop["jobs"] == 0)])
        if name == "default":
            walls = [s["dag"]["wall_s"] for s in seeds if s.get("dag")]
            if walls:
                rows.append([f"default DAG ≤ 10 min on {figures['machine']['cores']} CPU cores",
                             ", ".join(f"{w / 60:.1f} min" for w in walls), _met(max(walls) <= 600)])
        if "pretrained" in name.split("+"):
            rows += regime_goals(name, p, figures["machine"]["cores"])
    for name, p in _presets(figures):
        f = p.get("faults")
        if f:
            rows.append([f"faults survived, N ≥ 10: final artifacts equal to an uninterrupted run (`{name}`)",
                         f"{f['survived']} of {f['faults']}", _met(f["faults"] >= 10 and f["survived"] == f["faults"])])
    slurm = figures.get("slurm")
    for run in _slurm_runs(slurm) if slurm else []:
        what = "whole DAG" if run["targets"] == ["all"] else "CAM targets, as the SLURM test"
        rows.append([f"SLURM wall ≤ 1.5 × local wall (`{Path(slurm['preset']).stem}`, {what})",
                     f"×{_fmt(run['ratio'], 2)} ({run['sbatch_jobs']} sbatch jobs)", _met(run["ratio"] <= 1.5)])
    gpu = figures.get("gpu")
    seco_it = _gpu_seco_s_per_it(gpu)
    rows.append(["SeCo training ≤ 0.18 s/iter on one H100 (VOC setting)",
                 "not measured (no GPU lent)" if seco_it is None else f"{seco_it:.3f} s/iter ({gpu.get('device')})",
                 "–" if seco_it is None else _met(seco_it <= 0.18)])
    return rows


def _std(values: list[Any]) -> float:
    vals = [x for x in (_num(v) for v in values) if x is not None]
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


def regime_goals(name: str, p: dict, cores: int) -> list[list[str]]:
    """The papers' regime (issue 13): a ceiling worth the name, the problem kept, and methods that beat
    their baseline by more than the spread over seeds."""
    seeds = _seeds(p)
    q = [s["quality"]["rows"] for s in seeds]
    rows: list[list[str]] = []

    def col(m: str, k: str) -> list[Any]:
        return [x[m].get(k) if m in x else None for x in q]

    fa = _mean(col("baseline", "context_fa_decoupled"))
    rows.append([f"the problem stays: baseline ctx FA on the decoupled split ≥ 0.3 (`{name}`)", _fmt(fa, 3),
                 _met(fa is not None and fa >= 0.3)])
    ceiling = _mean(col("gt", "val_crf_miou"))
    rows.append([f"ceiling (DeepLab on GT) final+CRF ≥ 0.65 (`{name}`)", _fmt(ceiling, 3),
                 _met(ceiling is not None and ceiling >= 0.65)])
    if "seco" in q[0]:
        r = _mean(col("seco", "ratio_to_ceiling"))
        rows.append([f"SeCo final+CRF ≥ 0.85 × ceiling (`{name}`)", _fmt(r, 3), _met(r is not None and r >= 0.85)])
    for m in ("csd", "seco"):
        if m not in q[0] or "baseline" not in q[0]:
            continue
        for k, label in (("seed_miou", "seed"), ("val_crf_miou", "final+CRF")):
            diff = [(_num(a) or 0.0) - (_num(b) or 0.0) for a, b in zip(col(m, k), col("baseline", k), strict=True)]
            spread = max(_std(col(m, k)), _std(col("baseline", k)))
            d = statistics.mean(diff)
            rows.append([f"{m} above baseline on {label} mIoU by > the std over seeds (`{name}`)",
                         f"{d:+.3f} (std {spread:.3f}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''})",
                         # one seed has no spread to beat: shown, not judged
                         _met(d > spread) if len(seeds) > 1 else "– (needs ≥ 2 seeds)"])
        ratios = []
        for k in ("cooc_seed", "cooc_val"):
            base, v = _mean(col("baseline", k)), _mean(col(m, k))
            ratios.append(v / base if v is not None and base else None)
        rows.append([f"{m} pooled co-occurrence ≤ 0.7 × baseline's, seeds and final (`{name}`)",
                     f"seeds ×{_fmt(ratios[0])}, final ×{_fmt(ratios[1])}",
                     _met(all(r is not None and r <= 0.7 for r in ratios))])
        v = _mean(col(m, "context_fa_decoupled"))
        rows.append([f"{m} ctx FA on the decoupled split ≤ 0.5 × baseline's (`{name}`)",
                     f"×{_fmt(v / fa) if v is not None and fa else '–'}",
                     _met(v is not None and bool(fa) and v <= 0.5 * fa)])
    if name == "pretrained":
        rows += _budget_goals(name, p, cores)
    return rows


def _budget_goals(name: str, p: dict, cores: int) -> list[list[str]]:
    """Wall of the default DAG in the pretrained regime with the weights cached (runs that ran no
    pretrain job), and with the pretraining added (its seconds from the cache's metrics)."""
    cached = [s["dag"]["wall_s"] for s in _seeds(p) if s.get("dag") and "pretrain" not in s.get("stages", {})]
    fresh = [s["dag"]["wall_s"] for s in _seeds(p) if s.get("dag") and "pretrain" in s.get("stages", {})]
    pre = [j.get("seconds") for j in (p.get("pretraining") or {}).values()]
    pre_s = sum(x for x in pre if x) if pre and all(pre) else None
    rows = []
    if cached:
        rows.append([f"`{name}` DAG ≤ 10 min on {cores} CPU cores, pretrained weights cached",
                     ", ".join(f"{w / 60:.1f} min" for w in cached), _met(max(cached) <= 600)])
    if fresh:
        rows.append([f"`{name}` DAG ≤ 20 min on {cores} CPU cores, pretraining included (a fresh cache)",
                     ", ".join(f"{w / 60:.1f} min" for w in fresh), _met(max(fresh) <= 1200)])
    elif cached and pre_s is not None:
        total = max(cached) + pre_s  # the slowest cached run plus the pretraining jobs' own training seconds
        rows.append([f"`{name}` DAG ≤ 20 min on {cores} CPU cores, pretraining included",
                     f"{total / 60:.1f} min ({max(cached) / 60:.1f} + pretraining {pre_s / 60:.1f}, its own metrics)",
                     _met(total <= 1200)])
    return rows


def _gpu_seco_s_per_it(gpu: dict | None) -> float | None:
    """The faster precision's SeCo s/iter from `pipeline.bench.gpu`'s JSON."""
    if not gpu or gpu.get("device") == "cpu":
        return None
    vals = [v["s_per_iter"] for v in gpu.get("seco", {}).values() if isinstance(v, dict) and v.get("s_per_iter")]
    return min(vals) if vals else None


def _presets(figures: dict) -> list[tuple[str, dict]]:
    """Presets in the order they were run (bench.json stores its keys sorted)."""
    return [(name, figures["presets"][name]) for name in figures.get("preset_order", sorted(figures["presets"]))]


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def gpu_section(figures: dict) -> list[str]:
    gpu = figures.get("gpu")
    out = ["## GPU", ""]
    if not gpu:
        out += ["Not measured: no GPU was available where this document was generated. On a GPU machine run",
                "", f"    {GPU_COMMAND}", "    python -m pipeline.bench.run --render-only --gpu-json results/bench/gpu.json",
                "", "It times SeCo training at the VOC setting (ViT-B/16, 448 crop, batch 4) in fp32 and bf16, "
                "the CAM export and DeepLab training, with peak GPU memory, on synthetic images of VOC size.", ""]
        return out
    out.append(f"Device: {gpu['device']} (torch {gpu['torch']}, CUDA {gpu['cuda']}); {gpu['iters']} iterations, "
               f"first {gpu['warmup']} not timed; {gpu['images']} synthetic images with sides "
               f"{gpu['image_sides'][0]}–{gpu['image_sides'][1]} px; command: `{GPU_COMMAND}`.")
    out.append("")
    rows = []
    for stage, label in (("seco", "SeCo training"), ("deeplab", "DeepLab training")):
        for precision, fig in gpu[stage].items():
            if isinstance(fig, dict):
                rows.append([f"{label} ({precision})", _fmt(fig["s_per_iter"], 3), "–", _fmt(fig["peak_mem_gib"], 2)])
    cam = gpu["make_cam"]
    rows.append(["CAM export", "–", _fmt(cam["images_per_s"], 1), _fmt(cam["peak_mem_gib"], 2)])
    out += _table(["measurement", "s/iter", "images/s", "peak memory GiB"], rows)
    return out


def faults_section(figures: dict) -> list[str]:
    out = ["## Fault injection", ""]
    measured = [(name, p["faults"]) for name, p in _presets(figures) if p.get("faults")]
    if not measured:
        return out + ["Not measured in this run (`python -m pipeline.bench.run` runs it unless `--no-faults`).", ""]
    for name, f in measured:
        out.append(f"`{name}`, first seed: **faults survived: {f['survived']} of {f['faults']}** "
                   f"({f['seconds'] / 60:.1f} min in all). Each launch of Snakemake arms every fault not yet "
                   "injected; the first to fire is a SIGKILL of that stage's process alone, or of Snakemake's "
                   "whole process group. The rerun is the README's (`snakemake --unlock` after a killed Snakemake, "
                   "then `--rerun-incomplete`). Afterwards every file under `results/` (run folders excepted) is "
                   "compared with the uninterrupted run's: "
                   + ("all equal." if not f["mismatches"] else f"differing: {', '.join(f['mismatches'])}."))
        out.append("")
        out += _table(["#", "killed", "during", "trigger file seen"],
                      [[i + 1, "Snakemake's process group" if r["kill"] == "snakemake" else f"`{r['stage']}` alone",
                        r["fault"], "yes" if r["trigger_seen"] else "no (after the grace time)"]
                       for i, r in enumerate(f["injected"])])
        if f.get("not_reached"):
            out += [f"Not reached (the DAG finished first): {', '.join(f['not_reached'])}.", ""]
    return out


SLURM_COMMAND = "python -m pipeline.bench.slurm --out results/bench/slurm.json"


def _slurm_runs(slurm: dict) -> list[dict]:
    """The CAM-target comparison (the SLURM test's), then the whole DAG's when measured."""
    return [slurm] + ([slurm["whole_dag"]] if slurm.get("whole_dag") else [])


def slurm_section(figures: dict) -> list[str]:
    slurm = figures.get("slurm")
    out = ["## SLURM against local", ""]
    if not slurm:
        return out + ["Not measured in this document. As root, on a machine where Debian's slurm-wlm can be "
                      "installed:", "", f"    {SLURM_COMMAND}",
                      "    python -m pipeline.bench.run --render-only --slurm-json results/bench/slurm.json", ""]
    out.append(f"Preset `{slurm['preset']}`, each target set run in a fresh directory: locally with "
               f"`--cores {slurm['cores']}`, and through a real single-node SLURM on this machine with "
               f"`--profile profiles/slurm` plus the test cluster's settings (`{' '.join(slurm['cluster_args'])}`). "
               f"Command: `{slurm['command']}`. Seconds-long jobs are local rules; the others go through sbatch in "
               "their job groups (profiles/README.md).")
    out.append("")
    out += _table(["targets", "local wall s", "SLURM wall s", "SLURM / local", "sbatch jobs", "jobs through sbatch"],
                  [[", ".join(f"`{t}`" for t in run["targets"]), _fmt(run["local_s"], 1), _fmt(run["slurm_s"], 1),
                    _fmt(run["ratio"], 2), run["sbatch_jobs"], ", ".join(run["sbatch_rules"])]
                   for run in _slurm_runs(slurm)])
    probe = slurm.get("probe")
    if probe:
        out.append("The SLURM executor plugin runs `sacct`, `squeue` and `scontrol show config` when its module "
                   "loads, and Snakemake loads every installed plugin in every process (the submitting one and "
                   "each job step inside a SLURM job). Median of 3, seconds:")
        out.append("")
        out += _table(["client config", "plugin import", "no-op `snakemake -n`"],
                      [[k, _fmt(v["plugin_import_s"], 2), _fmt(v["noop_dry_run_s"], 2)] for k, v in probe.items()])
    return out


# The pretrained regime of each preset: `pretrained` is config.yaml's (the `default` preset's).
REGIME_STAGES = (("seed_miou", "seed"), ("mask_crf_miou", "mask+CRF"), ("val_crf_miou", "final+CRF"))


def _regime_pairs(figures: dict) -> list[tuple[str, str]]:
    names = [n for n, _ in _presets(figures)]
    pairs = []
    for name in names:
        parts = name.split("+")
        if parts[-1] != "pretrained":
            continue
        scratch = "+".join(parts[:-1]) or "default"
        if scratch in names:
            pairs.append((scratch, name))
    return pairs


def regime_section(figures: dict) -> list[str]:
    """Both regimes side by side, stage by stage: where pretraining helps, and where each method
    gains or loses against the baseline (seed -> mask after the CRF -> final after the CRF)."""
    out: list[str] = []
    for scratch, pre in _regime_pairs(figures):
        a, b = figures["presets"][scratch], figures["presets"][pre]
        methods = [m for m in methods_of(b) if m in methods_of(a)]
        out += [f"### Regimes: `{scratch}` (from scratch) against `{pre}` (pretrained)", "",
                "Mean over each preset's seeds; Δ base = the method minus the baseline in the same run (the "
                "stage where a method gains or loses against the CAM baseline it improves on).", ""]
        rows = []
        for m in methods:
            row = [m]
            for k, _ in REGIME_STAGES:
                va = _mean([s["quality"]["rows"][m].get(k) for s in _seeds(a)])
                vb = _mean([s["quality"]["rows"][m].get(k) for s in _seeds(b)])
                row.append(f"{_fmt(va, 3)} → {_fmt(vb, 3)}")
                if "baseline" in methods and m not in ("baseline", "gt"):
                    base = _mean([s["quality"]["rows"]["baseline"].get(k) for s in _seeds(b)])
                    row.append("–" if vb is None or base is None else f"{vb - base:+.3f}")
                else:
                    row.append("–")
            rows.append(row)
        header = ["method"]
        for _, label in REGIME_STAGES:
            header += [f"{label}", f"{label} Δ base (pretrained)"]
        out += _table(header, rows)
    return out


def _kept_note(figures: dict) -> str:
    kept = [name for name, p in _presets(figures) if (p.get("provenance") or {}).get("command") != figures["command"]]
    if not kept:
        return ""
    return (f", which kept the recorded figures of {', '.join(f'`{n}`' for n in kept)} (measured by an earlier "
            "command: the line under each Quality heading says which command, code and date)")


def provenance_line(p: dict) -> list[str]:
    src = p.get("provenance")
    if not src:
        return []
    return [f"Measured by `{src['command']}` on {src['date']}, code {src['code']}, {src['machine']}.", ""]


def gap_section(figures: dict) -> list[str]:
    """Where each method's gap to the GT-trained ceiling arises: in its training labels (seed -> mask ->
    CRF, which GT masks score 1.0 on) or in the final DeepLab stage trained on them."""
    out: list[str] = []
    for name, p in _presets(figures):
        if name in SMOKE_PRESETS or "gt" not in methods_of(p):
            continue
        out += [f"### Gap to the ceiling: `{name}`", "",
                "labels = the masks after the CRF that DeepLab trains on (mIoU on the training images, where GT "
                "masks score 1.0); ÷ceiling = final+CRF over the DeepLab trained on GT. Shortfall = 1 − the value. "
                "Where the labels' shortfall is the larger, the loss is in the labels (seed → mask → CRF) and the "
                "final stage recovers part of it; otherwise the final stage loses beyond its labels. Means over seeds.", ""]
        rows = []
        for m in methods_of(p):
            if m == "gt":
                continue
            v = {k: _mean([s["quality"]["rows"][m].get(k) for s in _seeds(p)])
                 for k in ("seed_miou", "mask_miou", "mask_crf_miou", "ratio_to_ceiling")}
            labels, ratio = v["mask_crf_miou"], v["ratio_to_ceiling"]
            # the larger shortfall (1 - value) is the smaller value
            where = "–" if labels is None or ratio is None else "labels" if labels < ratio else "final stage"
            rows.append([m, _fmt(v["seed_miou"], 3), _fmt(v["mask_miou"], 3), _fmt(labels, 3),
                         _fmt(None if labels is None else 1 - labels, 3), _fmt(ratio, 3),
                         _fmt(None if ratio is None else 1 - ratio, 3), where])
        out += _table(["method", "seed", "mask", "labels (mask+CRF)", "labels' shortfall", "÷ceiling",
                       "final shortfall", "larger loss in"], rows)
    return out


CONTEXT_LABELS = dict(zip(CONTEXT_STAGES, ("seed", "mask", "mask+CRF", "final+CRF val", "final+CRF decoupled"),
                          strict=True))


def context_section(figures: dict) -> list[str]:
    """The context false activation stage by stage: whether a method's final model fires on a context
    beside its object (val) and on the context alone (decoupled), and from which labels it learnt that."""
    out: list[str] = []
    for name, p in _presets(figures):
        seeds = _seeds(p)
        by = [s["quality"].get("context_by_stage") for s in seeds]
        if name in SMOKE_PRESETS or not all(by):
            continue
        out += [f"### Context false activation: `{name}`", "",
                "Share of context pixels (water, rail, grass; ground-truth background) predicted as the context's "
                "usual class (boat, train, horse). seed, mask, mask+CRF: the training images, where the context lies "
                "beside its object; final+CRF val: the final DeepLab on val (the same situation); final+CRF "
                "decoupled: the final DeepLab on the decoupled split, where each context appears without its "
                "object. Mean ± std over seeds.", ""]
        methods = [m for m in methods_of(p) if m in by[0]]
        out += _table(["method", *CONTEXT_LABELS.values()],
                      [[m, *(mean_std([b[m].get(k) for b in by]) for k in CONTEXT_LABELS)] for m in methods])
        if "baseline" in methods:
            val = _mean([b["baseline"]["final_val"] for b in by])
            dec = _mean([b["baseline"]["final_decoupled"] for b in by])
            if val is not None and dec is not None:
                out += [f"The baseline's final model labels {_fmt(val, 3)} of the context pixels beside their object "
                        f"as that object and {_fmt(dec, 3)} of a context shown alone"
                        + (": its context error spreads from the object into its surroundings rather than firing on "
                           "the context itself." if dec < 0.5 * val else "."), ""]
    return out


def render(figures: dict) -> str:
    m = figures["machine"]
    out = ["# Benchmarks", "",
           f"Generated by `{figures['command']}` on {m['date']}{_kept_note(figures)}. Do not edit by hand: rerun "
           "the command (`--render-only` rewrites this file from `bench.json` beside it).", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {_fmt(m['memory_gib'], 1)} GiB RAM; {m['os']}; Python "
           f"{m['python']}, torch {m['torch']} ({m['torch_threads']} threads); GPU: {m['cuda'] or 'none'}. "
           "Timings on a shared machine are noisy; compare ratios measured in one run.", "",
           "## Goals", ""]
    out += _table(["goal", "measured", ""], goals(figures))
    out += ["## Quality", ""]
    for name, p in _presets(figures):
        out += quality_section(name, p)
    regimes = regime_section(figures)
    if regimes:
        out += ["## Both regimes", "", *regimes]
    gaps = gap_section(figures)
    if gaps:
        out += ["## Gap to the ceiling", "", *gaps]
    context = context_section(figures)
    if context:
        out += ["## Context false activation by stage", "", *context]
    out += ["## Speed", ""]
    for name, p in _presets(figures):
        out += speed_section(name, p)
    out += ["## Storage", ""]
    for name, p in _presets(figures):
        out += storage_section(name, p)
    out += faults_section(figures)
    out += slurm_section(figures)
    out += gpu_section(figures)
    return "\n".join(out).rstrip() + "\n"
