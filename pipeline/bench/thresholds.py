"""Threshold sweep of a CAM method's pseudo masks on the training split (never val).

The papers' thresholds (IRN: seeds 0.15, masks conf_fg 0.30 / conf_bg 0.05) were tuned for ImageNet
CAMs on VOC; a new regime tunes its own on the training images, as IRN did. The seed threshold
comes from eval_cam's sweep (`eval_cam.sweep`, in eval_cam.json). This command sweeps the dual
thresholds of `masks.methods.<method>` on a finished run: for each (fg, bg) pair, the masks before
and after the method's CRF, scored like eval_masks (uncertain pixels count as background):

    python -m pipeline.bench.thresholds --run results/bench/pretrained/seed0 --method baseline \\
        --preset configs/pretrained.yaml --fg 0.3 0.45 0.6 --bg 0.05 0.15 0.25 --out sweep.json

The JSON lists every pair and the best by mIoU after the CRF (what DeepLab trains on). It reads
the run's dataset, index and cams.h5, and writes nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.bench.measure import merged_config
from pipeline.cli import open_indexed, setup_logging
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.pairs import cooccurring_pairs
from pipeline.eval.segmentation import SegEvaluator, miou_convention
from pipeline.io.atomic import write_text_atomic
from pipeline.io.h5store import ArtifactReader
from pipeline.masks.pseudo import method_recipe, raw_mask, refined_mask

log = logging.getLogger("pipeline.bench.thresholds")


def sweep_pair(run: str, cfg: dict, method: str, fg: float, bg: float, max_images: int | None) -> dict[str, Any]:
    """mIoU of the method's masks at (fg, bg) on the eval split of `run`, before and after its CRF."""
    os.chdir(run)  # the config's dataset root and the index are relative to the run directory
    recipe = replace(method_recipe(cfg, method), fg_threshold=fg, bg_threshold=bg)
    if recipe.labels != "dual":
        raise PipelineError(f"config key masks.methods.{method}.labels: {recipe.labels!r}; the sweep is for dual thresholds")
    ds, index = open_indexed(cfg, "results/dataset/index.json")
    reader = ArtifactReader(f"results/cam/{method}/cams.h5", expect="scores")
    ids = index["splits"]["eval"]["ids"][:max_images]
    pairs = cooccurring_pairs(ds, index)
    raw, crf = (SegEvaluator(ds, pairs, miou_convention(cfg)) for _ in range(2))
    for image_id in ids:
        planes, classes = reader.scores(image_id)
        present = ds.present_classes(image_id)
        gt = ds.mask(image_id)
        raw.update(image_id, raw_mask(recipe, planes, classes, present), gt)
        crf.update(image_id, refined_mask(recipe, ds.image(image_id), planes, classes, present), gt)
    r, c = raw.summary(), crf.summary()
    return {"fg_threshold": fg, "bg_threshold": bg, "mask_miou": r["miou"], "mask_crf_miou": c["miou"],
            "num_images": len(ids)}


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished run directory (its results/cam/<method>/cams.h5)")
    p.add_argument("--method", required=True, help="a CAM method with dual thresholds (masks.methods.<method>)")
    p.add_argument("--preset", nargs="*", default=[], help="the config files the run used, in order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fg", type=float, nargs="+", default=[0.3, 0.45, 0.6])
    p.add_argument("--bg", type=float, nargs="+", default=[0.05, 0.15, 0.25])
    p.add_argument("--max-images", type=int, default=None, help="the first N eval images only")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    setup_logging()
    run = Path(args.run).resolve()
    if not (run / "results" / "cam" / args.method / "cams.h5").exists():
        raise PipelineError(f"{run}: no results/cam/{args.method}/cams.h5 (run the DAG there first)")
    cfg = merged_config([Path(f) for f in args.preset], args.seed)
    grid = [(fg, bg) for fg in args.fg for bg in args.bg if bg < fg]
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        jobs = [pool.submit(sweep_pair, str(run), cfg, args.method, fg, bg, args.max_images) for fg, bg in grid]
        rows = [j.result() for j in jobs]
    for row in rows:
        log.info("%s fg %.2f bg %.2f: mask %.4f, mask+CRF %.4f", args.method, row["fg_threshold"], row["bg_threshold"],
                 row["mask_miou"], row["mask_crf_miou"])
    best = max(rows, key=lambda r: r["mask_crf_miou"])
    eval_cam = run / "results" / "cam" / args.method / "eval_cam.json"
    seeds = json.loads(eval_cam.read_text()) if eval_cam.exists() else {}
    out = {"run": str(run), "method": args.method, "preset": args.preset, "split": "eval (training images)",
           "pairs": rows, "best": best, "seed_sweep": {k: seeds.get(k) for k in ("best_threshold", "best_miou",
                                                                                  "bg_threshold", "miou")}}
    write_text_atomic(args.out, json.dumps(out, indent=1))
    log.info("best: fg %.2f bg %.2f (mask+CRF %.4f); seeds: best threshold %s", best["fg_threshold"],
             best["bg_threshold"], best["mask_crf_miou"], out["seed_sweep"]["best_threshold"])


if __name__ == "__main__":
    main()
