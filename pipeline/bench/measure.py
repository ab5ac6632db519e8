"""Measurements the DAG itself does not make: a timed DAG run, the no-op rerun, CRF on 1 vs 2
processes, and the fidelity of the compact CAM cache against IRN's float32 `high_res` CAMs.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.rules import stage_cfg

log = logging.getLogger("pipeline.bench")

REPO = Path(__file__).resolve().parents[2]
_CRF_RATE = re.compile(r"(\d+) images in ([\d.]+)s on (\d+) process\(es\): ([\d.]+) images/s")


# A preset: the config files given after config.yaml, in order (none: config.yaml alone).
Preset = Path | Sequence[Path] | None


def preset_files(preset: Preset) -> list[Path]:
    if preset is None:
        return []
    return [preset] if isinstance(preset, Path) else list(preset)


def configfile_args(preset: Preset) -> list[str]:
    """`--configfile A B`: each file updates the config in order, as `merged_config` does."""
    files = preset_files(preset)
    return ["--configfile", *(str(f.resolve()) for f in files)] if files else []


def merged_config(preset: Preset, seed: int) -> dict:
    """config.yaml updated by the preset's files the way `snakemake --configfile` does (nested keys)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in preset_files(preset):
        try:
            _update(cfg, yaml.safe_load(path.read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise PipelineError(f"{path}: cannot read the preset ({exc})") from exc
    cfg["seed"] = seed
    return cfg


def _update(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _update(base[k], v)
        else:
            base[k] = v


def snakemake_command(run: Path, preset: Preset, seed: int | None, cores: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(run),
           "--cores", str(cores), *extra]
    cmd += ["--config", f"seed={seed}"] if seed is not None else []
    return cmd + configfile_args(preset)


def timed_dag(run: Path, preset: Preset, seed: int, cores: int) -> dict[str, Any]:
    """Run the whole default DAG in `run`; wall time and the number of jobs Snakemake ran."""
    run.mkdir(parents=True, exist_ok=True)
    return timed_snakemake(run, preset, seed, cores, "bench_snakemake.log")


def noop_rerun(run: Path, preset: Preset, seed: int, cores: int) -> dict[str, Any]:
    """The same Snakemake command again on the finished run: seconds and jobs scheduled."""
    return timed_snakemake(run, preset, seed, cores, "bench_noop.log")


def timed_snakemake(run: Path, preset: Preset, seed: int, cores: int, log_name: str) -> dict[str, Any]:
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
    """The CAM cache against what it stands for: IRN's float32 `high_res` of the same network.

    On the first `max_images` eval images of the finished run `run`: CAMs from the run's
    `results/cam/<method>/model_final.pth` (`multiscale_cam`), the cache exactly as make_cam
    builds it (`cam_cache`), written to a temporary cams.h5 and read back as every reader does.
    Seed mIoU in eval_cam's protocol (constant background plane at `eval_cam.bg_threshold.<m>`,
    argmax, `eval.miou_convention`) of the cache vs of `high_res`, the loss in mIoU points, the
    cache's bytes per image pixel, and, for reference, IRN's stride-4 `cam` upsampled on read
    (what the cache held before). The run's own cams.h5 is not read: it may predate the code.
    """
    import torch

    from pipeline.cli import open_indexed
    from pipeline.eval.pairs import cooccurring_pairs
    from pipeline.eval.segmentation import SegEvaluator
    from pipeline.io.h5store import ArtifactReader, ArtifactWriter, upsample_scores
    from pipeline.irn.cams import cam_cache, multiscale_cam, scores_to_label
    from pipeline.irn.train import build_cam_net
    from pipeline.runtime.checkpoint import load_final

    cfg = {**cfg, "dataset": {**cfg["dataset"], "root": str(run / cfg["dataset"]["root"])}}
    ds, index = open_indexed(cfg, run / "results" / "dataset" / "index.json")
    state, _ = load_final(run / "results" / "cam" / method / "model_final.pth")
    cam = cfg["cam"]
    net = build_cam_net({**cam, "pretrained": None}, ds.num_classes)
    net.load_state_dict(state)
    net.eval()
    threshold = float(cfg["eval_cam"]["bg_threshold"][method])
    convention = cfg["eval"]["miou_convention"]
    pairs = cooccurring_pairs(ds, index)
    evs = {k: SegEvaluator(ds, pairs, convention) for k in ("cache", "high_res", "strided")}
    ids = index["splits"]["eval"]["ids"][:max_images]
    stride, pixels = int(cam["cam_stride"]), 0
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(dir=run) as tmp:
        path = Path(tmp) / "cams.h5"
        with ArtifactWriter(path, "scores", ds.class_names, {"cam": cam}) as w:
            for image_id in ids:
                img, classes = ds.image(image_id), ds.present_classes(image_id)
                cams = multiscale_cam(net, img, classes, cam["scales"], stride=stride,
                                      output_stride=cam["output_stride"], device="cpu")
                w.write_scores(image_id, cam_cache(cams.high_res, stride), classes, img.shape[:2], stride=stride)
                gt = ds.mask(image_id)
                evs["high_res"].update(image_id, scores_to_label(cams.high_res, classes, threshold), gt)
                old = upsample_scores(cams.strided.astype("float16").astype("float32"), stride, img.shape[:2])
                evs["strided"].update(image_id, scores_to_label(old, classes, threshold), gt)
                pixels += img.shape[0] * img.shape[1]
        reader = ArtifactReader(path, expect="scores")
        for image_id in ids:
            cached, classes = reader.scores(image_id)
            evs["cache"].update(image_id, scores_to_label(cached, classes, threshold), ds.mask(image_id))
        reader.close()
        nbytes = path.stat().st_size
    miou = {k: ev.summary()["miou"] for k, ev in evs.items()}
    return {"method": method, "images": len(ids), "bg_threshold": threshold, "miou_convention": convention,
            "cam_stride": stride, "reference": "high_res", "cache_miou": miou["cache"],
            "full_res_miou": miou["high_res"], "cache_minus_full": miou["cache"] - miou["high_res"],
            "loss_points": 100 * (miou["high_res"] - miou["cache"]), "bytes": nbytes, "pixels": pixels,
            "bytes_per_pixel": nbytes / max(pixels, 1), "strided_upsampled_miou": miou["strided"]}
