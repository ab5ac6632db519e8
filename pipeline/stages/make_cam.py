"""Stage: multi-scale + flip CAMs of the training images into the HDF5 score store.

IRN's make_cam: scales (1.0, 0.5, 1.5, 2.0) of the PIL-bicubic rescaled image, each with its
flip; CAMs only for the image's present classes. The cache holds IRN's `high_res` (full
resolution, each plane divided by its max): float16 cells at stride `cam.cam_stride`, fitted so
that the readers' bilinear upsampling reproduces it (`pipeline.irn.cams.cam_cache`; under 1 byte
per image pixel, docs/ARTIFACTS.md). `--strided FILE` also writes IRN's stride-`cam_stride` `cam`
maps (the random walk's input) as a second `scores` artifact, stored as they are.
Logs images/s, the stored bytes per image pixel and, on CUDA, the peak GPU memory; `--metrics`
also writes the throughput figures as JSON (the GPU benchmark reads them).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require, run_gpu_job, split_ids
from pipeline.errors import cli_entry
from pipeline.io.atomic import write_text_atomic
from pipeline.io.h5store import ArtifactWriter, merge_rank_shards, rank_shard_path
from pipeline.io.progress import progress
from pipeline.irn.cams import cam_cache, multiscale_cam
from pipeline.irn.train import build_cam_net
from pipeline.runtime.checkpoint import load_final
from pipeline.runtime.device import peak_memory_gib, reset_peak_memory, select_device
from pipeline.runtime.distributed import all_gather_objects, rank_device, shard_indices

log = logging.getLogger("pipeline.stages.make_cam")


def _infer(rank: int, world: int, cfg: dict, index_path: str, model_path: str, out: str,
           metrics: str | None = None, strided_out: str | None = None) -> None:
    cam = require(cfg, "cam")
    device = rank_device(select_device(require(cfg, "runtime.device")))
    ds, index = open_indexed(cfg, index_path)
    state, _ = load_final(model_path)
    net = build_cam_net({**cam, "pretrained": None}, ds.num_classes)
    net.load_state_dict(state)
    net.to(device).eval()
    ids = split_ids(index, "train", "eval")
    mine = [ids[i] for i in shard_indices(len(ids), rank, world)]
    outs = [out] if strided_out is None else [out, strided_out]
    reset_peak_memory(device)
    t0, pixels = time.perf_counter(), 0
    stride, provenance = cam["cam_stride"], {"cam": cam, "dataset": cfg["dataset"]}
    with ExitStack() as stack:
        writers = [stack.enter_context(ArtifactWriter(rank_shard_path(o, rank, world), "scores", ds.class_names,
                                                      provenance)) for o in outs]
        for image_id in progress(mine, f"make_cam rank {rank}"):
            img = ds.image(image_id)
            classes = ds.present_classes(image_id)
            cams = multiscale_cam(net, img, classes, cam["scales"], stride=stride,
                                  output_stride=cam["output_stride"], device=device)
            writers[0].write_scores(image_id, cam_cache(cams.high_res, stride), classes, img.shape[:2], stride=stride)
            if strided_out is not None:
                writers[1].write_scores(image_id, cams.strided, classes, img.shape[:2], stride=stride)
            pixels += img.shape[0] * img.shape[1]
    dt = time.perf_counter() - t0
    peak = peak_memory_gib(device)
    log.info("rank %d: %d images in %.1fs (%.2f images/s)%s", rank, len(mine), dt, len(mine) / max(dt, 1e-9),
             "" if peak is None else f", peak {device} memory {peak:.2f} GiB (tensors)")
    if metrics:  # every rank takes part in the gather; rank 0 writes the totals
        _write_metrics(metrics, all_gather_objects((len(mine), dt, peak)), rank, device)
    merge_rank_shards(outs, rank, world)
    if world == 1:
        size = Path(out).stat().st_size
        log.info("stored %d bytes for %d image pixels: %.4f bytes/pixel", size, pixels, size / max(pixels, 1))


def _write_metrics(path: str, per_rank: list[tuple[int, float, float | None]], rank: int,
                   device: torch.device) -> None:
    """{images, seconds, images_per_s, peak_mem_gib (null off CUDA), world_size, device}: the
    ranks run side by side, so the slowest one's time is the stage's."""
    if rank != 0:
        return
    images, seconds = sum(r[0] for r in per_rank), max(r[1] for r in per_rank)
    peaks = [r[2] for r in per_rank if r[2] is not None]
    write_text_atomic(path, json.dumps({
        "images": images, "seconds": seconds, "images_per_s": images / max(seconds, 1e-9),
        "peak_mem_gib": max(peaks) if peaks else None, "world_size": len(per_rank), "device": str(device),
    }, indent=1))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", default=None, help="optional JSON: images, seconds, images/s, peak GPU memory")
    p.add_argument("--strided", default=None, help="optional: IRN's stride-cam_stride `cam` maps (scores artifact)")
    args, cfg = parse(p, argv)
    run_gpu_job(_infer, args.gpus, cfg, args.index, args.model, args.out, args.metrics, args.strided)


if __name__ == "__main__":
    main()
