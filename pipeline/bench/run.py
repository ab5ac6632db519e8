"""Benchmark command: run the DAG per config and seed, measure, write docs/BENCHMARKS.md.

    python -m pipeline.bench.run                      # both presets x both regimes x seeds 0 1 2:
        # --preset default --preset configs/pretrained.yaml --preset configs/bench.yaml
        # --preset configs/bench.yaml+configs/pretrained.yaml --seeds 0 1 2

For each preset (`default` = config.yaml alone) and seed, the whole default DAG runs in its own
Snakemake working directory `<workdir>/<preset>/seed<N>` (the dataset is the same for every
seed: `synthetic.seed` is not the training seed). Then, on the first seed's run of each preset:
a no-op rerun, CRF on 1 and 2 processes, and the compact-CAM-cache check. All figures go to
`bench.json` beside the document (`docs/bench.json`, committed); the document is rendered from
that file alone, so `--render-only` rewrites it without running anything. Presets this command
does not run keep their recorded figures, each with the command, date and code that measured
it, so a benchmark too long for one sitting is built preset by preset (`--fresh` drops them).
A finished run directory is reused, not rerun (its
`bench_run.json` records the timed run); `--force` reruns it, and `--update` brings it up to date
incrementally after a config or code change, recording that rerun beside the first. `--remeasure cam_cache` redoes one
measurement on the existing runs (no DAG) and renders again:

    python -m pipeline.bench.run --preset default --seeds 0 1 --remeasure cam_cache
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.bench import collect, faults, measure
from pipeline.bench.document import render
from pipeline.cli import setup_logging
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_summary
from pipeline.io.atomic import write_text_atomic
from pipeline.io.h5store import code_version

log = logging.getLogger("pipeline.bench")

# Both presets in both regimes: from scratch (config.yaml) and the papers' (pretrained weights).
DEFAULT_PRESETS = ("default", "configs/pretrained.yaml", "configs/bench.yaml", "configs/bench.yaml+configs/pretrained.yaml")
# The measurements made on each preset's first seed's run (bench_measurements.json), by key.
MEASUREMENTS = ("noop", "crf", "cam_cache")


def split_preset(arg: str, seeds: list[int]) -> tuple[str, list[int]]:
    """`PATH` or `PATH:0,1,2` (that preset's own seeds; otherwise --seeds)."""
    head, _, tail = arg.rpartition(":")
    if head and re.fullmatch(r"\d+(,\d+)*", tail):
        return head, [int(s) for s in tail.split(",")]
    return arg, seeds


def preset_name(preset: str) -> str:
    """`default`, a file's stem, or the stems joined by `+` (`configs/bench.yaml+configs/pretrained.yaml`:
    `bench+pretrained`, the bench preset in the pretrained regime)."""
    return "default" if preset == "default" else "+".join(Path(p).stem for p in preset.split("+"))


def preset_paths(preset: str) -> list[Path]:
    """The config files of a preset, applied in order over config.yaml (none for `default`)."""
    if preset == "default":
        return []
    paths = [Path(p) for p in preset.split("+")]
    for path in paths:
        if not path.is_file():
            raise PipelineError(f"--preset {preset}: no such file {path}")
    return paths


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gb, "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def bench_preset(preset: str, seeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    name, path = preset_name(preset), preset_paths(preset)
    out: dict[str, Any] = {"preset": preset, "seeds": {}}
    # Absolute: the measurements run stage commands inside the run directory.
    root = Path(args.workdir).resolve() / name
    for seed in seeds:
        run = root / f"seed{seed}"
        marker = run / "bench_run.json"
        if args.update and marker.exists():
            # The timed full run stays the DAG's wall time; the incremental rerun is recorded beside it.
            dag = json.loads(marker.read_text())
            dag.setdefault("updates", []).append({**measure.timed_snakemake(run, path, seed, args.cores, "bench_update.log"),
                                                  "date": time.strftime("%Y-%m-%d"), "code": code_version()})
            write_text_atomic(marker, json.dumps(dag, indent=1))
        elif marker.exists() and not args.force:
            dag = json.loads(marker.read_text())
        elif args.skip_dag:
            dag = None
        else:
            dag = {**measure.timed_dag(run, path, seed, args.cores), "code": code_version(),
                   "date": time.strftime("%Y-%m-%d %H:%M %Z")}
            write_text_atomic(marker, json.dumps(dag, indent=1))
        if not (run / "results" / "summary.json").exists():
            raise PipelineError(f"{run}: no finished DAG run (results/summary.json missing)")
        out["seeds"][str(seed)] = {"dag": dag, "quality": collect.quality(run), "stages": collect.stage_times(run),
                                   "throughput": collect.throughput(run), "training": collect.training_rates(run)}
    first = root / f"seed{seeds[0]}"
    measured = first / "bench_measurements.json"
    cfg = measure.merged_config(path, seeds[0])
    measurements = {
        "noop": lambda: measure.noop_rerun(first, path, seeds[0], args.cores),
        "crf": lambda: measure.crf_processes(first, cfg, "baseline", [1, 2], args.crf_repeats, args.crf_images),
        "cam_cache": lambda: measure.cam_cache_fidelity(first, cfg, "baseline", args.cache_images),
    }
    if measured.exists() and not args.force:
        extra = json.loads(measured.read_text())
        if args.remeasure:
            # only the named measurements again, on the run directory as it is; the others are kept
            extra.update({k: measurements[k]() for k in args.remeasure})
            write_text_atomic(measured, json.dumps(extra, indent=1))
    else:
        extra = {k: run_one() for k, run_one in measurements.items()}
        write_text_atomic(measured, json.dumps(extra, indent=1))
    faults_json = root / "faults" / "faults.json"
    wanted = args.faults and (args.faults_preset is None or args.faults_preset == name)
    if wanted and not args.skip_dag and (args.force or not faults_json.exists()):
        # The same preset and seed, killed 12 times and rerun, against the first seed's run.
        shutil.rmtree(root / "faults", ignore_errors=True)
        (root / "faults").mkdir(parents=True)
        result = faults.campaign(first, root / "faults", path, args.cores, faults_seed=seeds[0])
        write_text_atomic(faults_json, json.dumps(result, indent=1))
    if faults_json.exists():
        out["faults"] = json.loads(faults_json.read_text())
    out.update(extra)
    out["storage"] = collect.storage(first)
    out["pretraining"] = collect.pretraining(cfg, first)
    return out


def merge_base(recorded: dict[str, Any] | None, fresh: bool) -> dict[str, Any]:
    """The figures a run starts from: the recorded ones (every preset, GPU and SLURM figures), or none."""
    if recorded is None or fresh:
        return {"presets": {}, "preset_order": []}
    base = dict(recorded)
    m = recorded.get("machine", {})
    # Figures recorded before presets carried their provenance: the file's own command and date.
    earlier = {"command": recorded.get("command", "unknown"), "date": m.get("date", "unknown"), "code": "unknown",
               "machine": f"{m.get('cpu', 'unknown')}, {m.get('cores', '?')} cores"}
    base["presets"] = {name: {"provenance": earlier, **p} for name, p in recorded.get("presets", {}).items()}
    base["preset_order"] = [n for n in recorded.get("preset_order", sorted(base["presets"])) if n in base["presets"]]
    return base


def provenance(command: str, m: dict[str, Any], preset: dict[str, Any]) -> dict[str, str]:
    """Which command, code and date measured a preset: merged documents mix sittings. Code and date are
    those of each seed's last DAG run (bench_run.json: the timed run or its last `--update`), so reused
    runs keep theirs; the machine is this command's (the measurements on the first seed run here)."""
    codes, dates = [], []
    for seed in preset["seeds"].values():
        dag = seed.get("dag") or {}
        last = (dag.get("updates") or [dag])[-1]
        codes.append(last.get("code") or "unknown")
        dates.append(last.get("date") or m["date"])
    return {"command": command, "date": ", ".join(dict.fromkeys(dates)), "code": ", ".join(dict.fromkeys(codes)),
            "machine": f"{m['cpu']}, {m['cores']} cores"}


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", help="config preset over config.yaml, or 'default'; A+B applies two files in order; PATH:0,1 gives "
                   "it its own seeds (repeatable; default: both presets in both regimes, DEFAULT_PRESETS)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (config key `seed`)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--workdir", default="results/bench")
    p.add_argument("--out", default="docs/BENCHMARKS.md")
    p.add_argument("--gpu-json", default=None, help="figures from `python -m pipeline.bench.gpu` to include")
    p.add_argument("--slurm-json", default=None, help="figures from `python -m pipeline.bench.slurm` to include")
    p.add_argument("--crf-images", type=int, default=240, help="at most this many eval images in the CRF timing")
    p.add_argument("--crf-repeats", type=int, default=2)
    p.add_argument("--cache-images", type=int, default=240, help="images in the CAM cache fidelity check")
    p.add_argument("--skip-dag", action="store_true", help="use existing run directories as they are")
    p.add_argument("--remeasure", nargs="+", choices=MEASUREMENTS, default=[],
                   help="measure these again on the first seed's existing run (implies --skip-dag), e.g. "
                   "`--remeasure cam_cache`: the CAM cache check of the current code without rerunning any DAG")
    p.add_argument("--update", action="store_true",
                   help="rerun Snakemake incrementally in finished run directories (after a config or code change); "
                   "the first full run's wall time is kept and the update is recorded beside it")
    p.add_argument("--render-only", action="store_true", help="only rewrite the document from recorded figures")
    p.add_argument("--force", action="store_true", help="rerun DAGs and measurements that were recorded")
    p.add_argument("--faults", action=argparse.BooleanOptionalAction, default=True,
                   help="fault injection on each preset's first seed (pipeline.bench.faults)")
    p.add_argument("--faults-preset", default=None, help="only this preset (by name) gets the fault injection")
    p.add_argument("--figures", default=None,
                   help="the recorded figures (default: bench.json beside --out, i.e. docs/bench.json)")
    p.add_argument("--fresh", action="store_true",
                   help="start anew: drop every recorded figure (presets this command does not run, GPU, SLURM; "
                   "default: keep them)")
    args = p.parse_args(argv)
    args.skip_dag = args.skip_dag or bool(args.remeasure)
    setup_logging()
    presets = args.preset or list(DEFAULT_PRESETS)
    bench_json = Path(args.figures) if args.figures else Path(args.out).with_name("bench.json")
    recorded = collect.read_json(bench_json) if bench_json.exists() else None
    if args.render_only:
        if recorded is None:
            raise PipelineError(f"--render-only: no recorded figures {bench_json} (run the benchmark first, or --figures)")
        figures = recorded
    else:
        command = " ".join(["python -m pipeline.bench.run", *(sys.argv[1:] if argv is None else argv)])
        figures = merge_base(recorded, args.fresh)
        figures.update(machine=machine(), command=command)
        for arg in presets:
            preset, seeds = split_preset(arg, args.seeds)
            name = preset_name(preset)
            measured = bench_preset(preset, seeds, args)
            figures["presets"][name] = {**measured, "provenance": provenance(command, figures["machine"], measured)}
            if name not in figures["preset_order"]:
                figures["preset_order"].append(name)
    if args.gpu_json:
        figures["gpu"] = collect.read_json(Path(args.gpu_json))
    if args.slurm_json:
        figures["slurm"] = collect.read_json(Path(args.slurm_json))
    write_summary(bench_json, figures)
    # Rendered from the file as written, so --render-only gives the same document.
    write_text_atomic(args.out, render(json.loads(bench_json.read_text())))
    log.info("wrote %s and %s", bench_json, args.out)


if __name__ == "__main__":
    main()
