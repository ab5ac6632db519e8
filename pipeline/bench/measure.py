"""Measurements the DAG itself does not make: a timed DAG run, the no-op rerun, CRF on 1 vs 2
processes, and the fidelity of the compact CAM cache against full-resolution float32 CAMs.

Every measurement runs the real stage code (Snakemake, `pipeline.stages.crf`, the CAM network)
on a finished run directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.rules import stage_cfg

log = logging.getLogger("pipeline.bench")

REPO = Path(__file__).resolve().parents[2]
_CRF_RATE = re.compile(r"(\d+) images in ([\d.]+)s on (\d+) process\(es\): ([\d.]+) images/s")


def merged_config(preset: Path | None, seed: int) -> dict:
    """config.yaml updated by the preset the way `snakemake --configfile` does (nested keys)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if preset is not None:
        try:
            _update(cfg, yaml.safe_load(preset.read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise PipelineError(f"{preset}: cannot read the preset ({exc})") from exc
    cfg["seed"] = seed
    return cfg


def _update(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _update(base[k], v)
        else:
            base[k] = v


def snakemake_command(run: Path, preset: Path | None, seed: int, cores: int) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(run),
           "--cores", str(cores), "--config", f"seed={seed}"]
    return cmd + (["--configfile", str(preset.resolve())] if preset is not None else [])


def timed_dag(run: Path, preset: Path | None, seed: int, cores: int) -> dict[str, Any]:
    """Run the whole default DAG in `run`; wall time and the number of jobs Snakemake ran."""
    run.mkdir(parents=True, exist_ok=True)
    return timed_snakemake(run, preset, seed, cores, "bench_snakemake.log")


def noop_rerun(run: Path, preset: Path | None, seed: int, cores: int) -> dict[str, Any]:
    """The same Snakemake command again on the finished run: seconds and jobs scheduled."""
    return timed_snakemake(run, preset, seed, cores, "bench_noop.log")


def timed_snakemake(run: Path, preset: Path | None, seed: int, cores: int, log_name: str) -> dict[str, Any]:
    cmd = snakemake_command(run, preset, seed, cores)
    log.info("snakemake in %s: %s", run, " ".join(cmd))
    t0 = time.perf_counter()
    p = _run(cmd, run / log_name)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise PipelineError(f"snakemake in {run} failed (exit {p.returncode}); see {run / log_name}")
    return {"wall_s": wall, "jobs": _jobs_run(p.stdout), "command": _display(cmd, run)}


def _run(cmd: list[str], log_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False)
    log_path.write_text(p.stdout)
    return p


def _jobs_run(output: str) -> int:
    if "Nothing to be done" in output:
        return 0
    m = re.search(r"^total\s+(\d+)", output, flags=re.M)
    if m is None:
        raise PipelineError("cannot find Snakemake's job count ('Job stats' table) in its output")
    return int(m.group(1))


def _display(cmd: list[str], run: Path) -> str:
    shown = ["snakemake" if c == sys.executable else c for c in cmd]
    if shown[:3] == ["snakemake", "-m", "snakemake"]:
        shown = shown[2:]
    return " ".join(shown).replace(str(REPO) + "/", "")


def crf_processes(run: Path, cfg: dict, method: str, processes: list[int], repeats: int,
                  max_images: int) -> dict[str, Any]:
    """`pipeline.stages.crf` on the same images with each process count, alternated `repeats` times.

    Rates come from the stage's own log line (refinement loop only, not interpreter start-up);
    the best of the repeats counts, because on a shared machine other load only slows a run down.
    """
    source = run / "results" / "cam" / method / "cams.h5"
    if not source.exists():
        source = run / "results" / method / "seg_logits.h5"
    index = run / "results" / "dataset" / "index.json"
    n_eval = len(json.loads(index.read_text())["splits"]["eval"]["ids"])
    shards = max(1, -(-n_eval // max_images))
    crf_cfg = stage_cfg(cfg, "crf_masks")
    rates: dict[int, list[float]] = {p: [] for p in processes}
    images = 0
    with tempfile.TemporaryDirectory(dir=run) as tmp:
        for _ in range(repeats):
            for p in processes:
                out = Path(tmp) / f"crf_p{p}.h5"
                cmd = [sys.executable, "-m", "pipeline.stages.crf", "--cfg", crf_cfg, "--index", str(index),
                       "--target", "masks", "--method", method, "--source", str(source),
                       "--shard", f"1-of-{shards}", "--processes", str(p), "--out", str(out)]
                res = subprocess.run(cmd, capture_output=True, text=True, cwd=run, check=False)
                m = _CRF_RATE.search(res.stderr)
                if res.returncode != 0 or m is None:
                    raise PipelineError(f"crf_stage with {p} processes failed in {run}:\n{res.stderr[-2000:]}")
                images = int(m.group(1))
                rates[p].append(float(m.group(4)))
                out.unlink()
    best = {p: max(r) for p, r in rates.items()}
    return {"method": method, "images": images, "repeats": repeats, "images_per_s": best, "all_rates": rates,
            "speedup": {p: best[p] / best[processes[0]] if best[processes[0]] else None for p in processes}}


def cam_cache_fidelity(run: Path, cfg: dict, method: str, max_images: int) -> dict[str, Any]:
    """Seed mIoU from the stored CAMs (float16, stride `cam.cam_stride`, upsampled on read) vs
    from the same network's CAMs computed at full resolution in float32, on the same images."""
    import torch

    from pipeline.cli import open_indexed
    from pipeline.eval.pairs import cooccurring_pairs
    from pipeline.eval.segmentation import SegEvaluator
    from pipeline.io.h5store import ArtifactReader
    from pipeline.irn.cams import multiscale_cam, scores_to_label
    from pipeline.irn.train import build_cam_net
    from pipeline.runtime.checkpoint import load_final

    cfg = {**cfg, "dataset": {**cfg["dataset"], "root": str(run / cfg["dataset"]["root"])}}
    ds, index = open_indexed(cfg, run / "results" / "dataset" / "index.json")
    state, _ = load_final(run / "results" / "cam" / method / "model_final.pth")
    net = build_cam_net({**cfg["cam"], "pretrained": None}, ds.num_classes)
    net.load_state_dict(state)
    net.eval()
    threshold = float(cfg["eval_cam"]["bg_threshold"][method])
    pairs = cooccurring_pairs(ds, index)
    convention = cfg["eval"]["miou_convention"]
    cached_ev, full_ev = SegEvaluator(ds, pairs, convention), SegEvaluator(ds, pairs, convention)
    reader = ArtifactReader(run / "results" / "cam" / method / "cams.h5", expect="scores")
    ids = index["splits"]["eval"]["ids"][:max_images]
    torch.manual_seed(0)
    for image_id in ids:
        cached, classes = reader.scores(image_id)
        full = multiscale_cam(net, ds.image(image_id), [int(c) for c in classes], cfg["cam"]["scales"], 1, "cpu")
        gt = ds.mask(image_id)
        cached_ev.update(image_id, scores_to_label(cached, classes, threshold), gt)
        full_ev.update(image_id, scores_to_label(full.astype("float32"), classes, threshold), gt)
    reader.close()
    a, b = cached_ev.summary()["miou"], full_ev.summary()["miou"]
    return {"method": method, "images": len(ids), "bg_threshold": threshold, "cache_miou": a, "full_res_miou": b,
            "cache_minus_full": a - b, "cam_stride": cfg["cam"]["cam_stride"]}
