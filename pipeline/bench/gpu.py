"""GPU micro-benchmark: SeCo training, CAM export and DeepLab training at the VOC setting.

    python -m pipeline.bench.gpu --out results/bench/gpu.json                      # one GPU
    python -m pipeline.bench.gpu --device cpu --tiny --iters 3 --out /tmp/g.json   # CPU smoke run

The real stages run in this process through their `main(argv)`, with the command lines of the
Snakemake rules (workflow/rules/*.smk), on a synthetic dataset generated in the work dir with
VOC's image sizes (sides 375-500 px) and read as a VOC dataset (21 classes, the real head sizes).
The config is config.yaml + configs/voc12.yaml, as `snakemake --configfile configs/voc12.yaml`
merges them, without pretrained weights (random weights cost the same) and with `--iters`
iterations:

- train_seco (ViT-B/16, crop 448, batch 4): every loss term on from iteration 1. The official
  schedule turns LIL/LIG on after 1,000 and SEG/REG after 2,000 of 20,000 iterations, so the
  full step is what 90% of a run costs. fp32 (TF32 matmuls: runtime.amp off) and bf16 autocast.
- make_cam (ResNet-50, cam.scales + flips): run twice on the same images; the first pass warms
  CUDA up (kernel loading), the second is reported (images/s of the stage's own loop).
- train_deeplab (v2 ResNet-101 at output stride 8, crop 321) on the GT masks (method `gt`: the
  same network and cost as pseudo masks); one iteration is `iter_size` batches. fp32 and bf16.

s/iter comes from the `seconds` column (elapsed time after each iteration) of the trainer's
metrics CSV, leaving out the first `--warmup` iterations (CUDA context, kernel selection,
DataLoader workers starting; at most half of them). Peak memory is what the stages record
(`torch.cuda.max_memory_allocated`: tensors, not the caching allocator's reserve). With
`--device cpu` bf16 falls back to fp32, as the stages do, and there are no memory figures (null).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.bench.measure import REPO, merged_config
from pipeline.cli import setup_logging
from pipeline.data.index import load_index
from pipeline.errors import PipelineError, cli_entry
from pipeline.io.atomic import write_text_atomic
from pipeline.irn.train import build_cam_net
from pipeline.pretrain.cache import SECTIONS as PRETRAINED_SECTIONS
from pipeline.rules import stage_cfg
from pipeline.runtime.checkpoint import save_final
from pipeline.runtime.lease import GpuLease
from pipeline.runtime.trainer import PEAK_MEM_KEY
from pipeline.stages import index_dataset, make_cam, make_synthetic, train_deeplab, train_seco

log = logging.getLogger("pipeline.bench.gpu")

VOC_PRESET = REPO / "configs" / "voc12.yaml"
SECO_GOAL_S_PER_ITER = 0.18  # on one H100
PRECISIONS = {"fp32": "off", "bf16": "bf16"}  # label -> runtime.amp
# The rules' `threads:` (workflow/rules/*.smk), passed as --threads the way Snakemake does.
# --tiny uses one thread everywhere: on a small shared CPU two threads ran make_cam 2.5x slower.
RULE_THREADS = {"train_seco": 1, "make_cam": 2, "train_deeplab": 1}
TINY_THREADS = dict.fromkeys(RULE_THREADS, 1)
VOC_SIDES = (375, 500)
# Enough images that the loaders rarely reach an epoch end inside the timed window: a new epoch
# restarts the workers' prefetching (real VOC epochs are thousands of iterations long).
DEFAULT_IMAGES = {"voc12": 64, "tiny": 16}


def bench_config(tiny: bool, device: str, iters: int, images: int, work: Path) -> dict:
    """The benchmark's config: the setting's values with the data, device and lengths replaced."""
    cfg = merged_config(None if tiny else VOC_PRESET, seed=0)
    cfg["synthetic"].update(num_train=images, num_val=0, num_decoupled=0, min_single_label=0)
    if not tiny:
        cfg["synthetic"].update(min_size=VOC_SIDES[0], max_size=VOC_SIDES[1])
    cfg["dataset"] = {"kind": "synthetic" if tiny else "voc", "root": str(work / "VOC2012"), "split_dir": None,
                      "splits": {"train": "train", "eval": "train"}}
    cfg["runtime"] = {"device": device, "amp": "off"}
    for section in PRETRAINED_SECTIONS:
        cfg[section]["pretrained"] = None  # no downloads, no pretraining; the timings do not depend on the weights
    seco = cfg["seco"]
    seco.update(iterations=iters, ckpt_every=iters)
    seco["schedule"] = {**seco["schedule"], "ptc_after": -1, "contrast_after": 0, "seg_after": 0,
                        "prototypes_from": 0}
    cfg["deeplab"].update(iterations=iters, ckpt_every=iters)
    return cfg


def seconds_per_iter(metrics_csv: Path, warmup: int) -> tuple[float, float | None]:
    """(s/iter after `warmup` iterations, peak memory in GiB or None) from a trainer's metrics CSV."""
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) <= warmup:
        raise PipelineError(f"{metrics_csv}: {len(rows)} iterations recorded, need more than {warmup}")
    elapsed = [float(r["seconds"]) for r in rows]
    start = elapsed[warmup - 1] if warmup else 0.0
    peaks = [float(r[PEAK_MEM_KEY]) for r in rows if r.get(PEAK_MEM_KEY)]
    return (elapsed[-1] - start) / (len(rows) - warmup), max(peaks) if peaks else None


def _release_cuda() -> None:
    # The next stage starts from an empty allocator, as it would in its own process.
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _fresh(run: Path) -> Path:
    # A checkpoint left by an earlier benchmark would be resumed instead of timed.
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    return run


def bench_training(stage_main: Callable[[list[str]], None], rule: str, section: str, cfg: dict, index: Path,
                   work: Path, warmup: int, threads: int,
                   extra: tuple[str, ...] = ()) -> dict[str, dict[str, float | None]]:
    """{precision: {s_per_iter, peak_mem_gib}} of one training stage in fp32 and bf16."""
    figures = {}
    for label, amp in PRECISIONS.items():
        run = _fresh(work / "runs" / f"{rule}-{label}")
        run_cfg = {**cfg, "runtime": {**cfg["runtime"], "amp": amp}}
        log.info("%s, %s: %d iterations", rule, label, run_cfg[section]["iterations"])
        # --gpus 0: this process already holds the GPU lease, and one process is what --gpus 1 runs.
        stage_main(["--cfg", stage_cfg(run_cfg, rule), "--index", str(index),
                    "--gpus", "0", "--threads", str(threads), *extra, "--out", str(run / "model_final.pth"),
                    "--ckpt-dir", str(run / "ckpt"), "--metrics", str(run / "metrics.csv")])
        _release_cuda()
        s_per_iter, peak = seconds_per_iter(run / "metrics.csv", warmup)
        figures[label] = {"s_per_iter": s_per_iter, "peak_mem_gib": peak}
    return figures


def bench_make_cam(cfg: dict, index: Path, work: Path, threads: int) -> dict[str, Any]:
    """make_cam's own figures (images, images_per_s, peak_mem_gib) on its second pass."""
    run = _fresh(work / "runs" / "make_cam")
    cam = cfg["cam"]
    class_names = load_index(index)["class_names"]
    # Weights as train_cam saves them; random ones (no training run) cost the same to apply.
    model = save_final(run / "model_final.pth", build_cam_net(cam, len(class_names)).state_dict(),
                       {"cam": cam, "num_classes": len(class_names), "class_names": class_names, "iterations": 0})
    for name in ("warmup", "timed"):
        make_cam.main(["--cfg", stage_cfg(cfg, "make_cam"), "--index", str(index),
                       "--gpus", "0", "--threads", str(threads), "--model", str(model),
                       "--out", str(run / f"{name}.h5"), "--metrics", str(run / f"{name}.json")])
        _release_cuda()
    timed = json.loads((run / "timed.json").read_text())
    return {k: timed[k] for k in ("images", "images_per_s", "peak_mem_gib")}


def run_benchmark(cfg: dict, work: Path, warmup: int, threads: dict[str, int]) -> dict[str, Any]:
    """Generate and index the data, then time the three stages; returns the figures."""
    root, index = Path(cfg["dataset"]["root"]), work / "index.json"
    make_synthetic.main(["--cfg", stage_cfg(cfg, "make_synthetic"), "--out", str(root)])
    index_dataset.main(["--cfg", stage_cfg(cfg, "index_dataset"), "--out", str(index), "--workers", "1"])
    # make_cam first: it runs with torch's default precision flags, which the trainers'
    # setup_precision changes for the rest of the process (TF32 matmuls).
    cam, seco, dl = cfg["cam"], cfg["seco"], cfg["deeplab"]
    cam_figures = bench_make_cam(cfg, index, work, threads["make_cam"])
    seco_figures = bench_training(train_seco.main, "train_seco", "seco", cfg, index, work, warmup,
                                  threads["train_seco"])
    dl_figures = bench_training(train_deeplab.main, "train_deeplab", "deeplab", cfg, index, work, warmup,
                                threads["train_deeplab"], ("--method", train_deeplab.GT_METHOD))
    return {
        "seco": {"backbone": seco["backbone"], "crop_size": seco["crop_size"], "batch_size": seco["batch_size"],
                 "goal_s_per_iter": SECO_GOAL_S_PER_ITER, **seco_figures},
        "make_cam": {"backbone": cam["backbone"], "scales": cam["scales"], "flip": True, **cam_figures},
        "deeplab": {"arch": dl["arch"], "backbone": dl["backbone"], "output_stride": dl["output_stride"],
                    "crop_size": dl["crop_size"], "batch_size": dl["batch_size"], "iter_size": dl["iter_size"],
                    **dl_figures},
    }


def format_table(result: dict[str, Any]) -> str:
    """The figures as a short plain-text table."""
    cpu = result["device"] == "cpu"

    def mem(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} GiB"

    def precision(label: str) -> str:
        return f"{label} (fp32 on CPU)" if cpu and label != "fp32" else label

    seco, cam, dl = result["seco"], result["make_cam"], result["deeplab"]
    rows = [("stage", "precision", "speed", "peak memory", "")]
    for label in PRECISIONS:
        rows.append(("train_seco", precision(label), f"{seco[label]['s_per_iter']:.3f} s/iter",
                     mem(seco[label]["peak_mem_gib"]), f"goal <= {seco['goal_s_per_iter']} s/iter on one H100"))
    rows.append(("make_cam", "fp32", f"{cam['images_per_s']:.1f} images/s", mem(cam["peak_mem_gib"]),
                 f"{len(cam['scales'])} scales + flip, {cam['images']} images"))
    for label in PRECISIONS:
        rows.append(("train_deeplab", precision(label), f"{dl[label]['s_per_iter']:.3f} s/iter",
                     mem(dl[label]["peak_mem_gib"]), f"batch {dl['batch_size']} x iter_size {dl['iter_size']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = (f"{result['setting']} setting on {result['device']} (torch {result['torch']}): {result['iters']} "
            f"iterations, first {result['warmup']} not timed, {result['images']} images")
    return "\n".join([head, *("  ".join(c.ljust(w) for c, w in zip(r, [*widths, 0], strict=False)).rstrip()
                              for r in rows)])


def _device_name(device: str) -> str:
    """The GPU's name, or "cpu"; one clear error when CUDA is asked for but absent."""
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise PipelineError("--device cuda: CUDA is not available on this machine (no GPU, or a CPU-only torch); "
                            "run with --device cpu for CPU timings without memory figures")
    return torch.cuda.get_device_name()


@contextlib.contextmanager
def _workdir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="wsss-gpu-bench-") as tmp:
        yield Path(tmp)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda: one leased GPU (pick it with CUDA_VISIBLE_DEVICES or WSSS_GPU_POOL)")
    p.add_argument("--tiny", action="store_true",
                   help="config.yaml's small models and image sizes instead of VOC's (a CPU smoke run)")
    p.add_argument("--iters", type=int, default=30, help="training iterations per run")
    p.add_argument("--warmup", type=int, default=5, help="first iterations not timed (at most half of --iters)")
    p.add_argument("--images", type=int, default=None,
                   help=f"synthetic training images (default {DEFAULT_IMAGES['voc12']}, --tiny {DEFAULT_IMAGES['tiny']})")
    p.add_argument("--workdir", default=None, help="data, checkpoints and metrics (default: a temporary dir, removed)")
    p.add_argument("--out", default="results/bench/gpu.json", help="the figures as JSON")
    args = p.parse_args(argv)
    setup_logging()
    if args.iters < 1 or args.warmup < 0:
        raise PipelineError("--iters must be >= 1 and --warmup >= 0")
    setting = "tiny" if args.tiny else "voc12"
    images = args.images or DEFAULT_IMAGES[setting]
    warmup = min(args.warmup, args.iters // 2)
    # The lease narrows CUDA_VISIBLE_DEVICES, so it comes before anything initialises CUDA; held
    # for the whole run, it also keeps Snakemake's GPU jobs off the GPU being timed.
    with GpuLease(1 if args.device == "cuda" else 0), _workdir(args.workdir) as work:
        result = {"device": _device_name(args.device), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "setting": setting, "iters": args.iters, "warmup": warmup, "images": images}
        cfg = bench_config(args.tiny, args.device, args.iters, images, work)
        result["image_sides"] = [cfg["synthetic"]["min_size"], cfg["synthetic"]["max_size"]]
        result.update(run_benchmark(cfg, work, warmup, TINY_THREADS if args.tiny else RULE_THREADS))
    write_text_atomic(args.out, json.dumps(result, indent=1))
    print(format_table(result), flush=True)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
