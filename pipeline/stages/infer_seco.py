"""Stage: SeCo inference: CAM seeds and multi-scale segmentation logits into the HDF5 store.

CAM seeds (`tools/infer_cam.py`), train + eval images: scales `seco.infer.cam_scales` (official
[1.0]) with flip, `multi_scale_cam2` (max of image and flip, ReLU, sum, per-class min-max),
planes of the present classes only, at stride `cam_stride` -- the make_cam schema.

Segmentation logits (`tools/infer_seg_voc.py`), train + eval + val images: for each scale the
image and its flip are summed, upsampled to the image size, and the max over scales is kept. The
official VOC script squashes every image to a (448 s)^2 square (`infer.resize: square`); COCO's
keeps the aspect ratio, (h s, w s) (`keep_aspect`). Stored as float16 for all classes at stride
`logits_stride`, so the cache stays <= 1 byte per image pixel: the cell values are the least-
squares fit whose bilinear upsampling (what every reader does) reproduces the full-resolution
logits, and their float16 mantissa is rounded to `logits_mantissa_bits` bits so gzip compresses.

The fidelity of that cache is measured on the way: on the eval and val images, mIoU of the
argmax of the full-resolution float32 logits vs of the cache as a reader sees it (upsampled
float16), written to --metrics with the stored bytes per image pixel.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require, run_gpu_job, split_ids
from pipeline.data.transforms import normalize, to_chw
from pipeline.errors import cli_entry
from pipeline.eval.metrics import ConfusionMatrix, scores, write_summary
from pipeline.io.h5store import (
    ArtifactWriter,
    fit_scores,
    merge_rank_shards,
    rank_shard_path,
    round_mantissa,
    upsample_scores,
)
from pipeline.io.progress import progress
from pipeline.runtime.checkpoint import load_final
from pipeline.runtime.device import select_device, setup_precision
from pipeline.runtime.distributed import all_gather_objects, rank_device, shard_indices
from pipeline.seco.infer import cam_seeds, seg_logits
from pipeline.seco.network import build_seco_net

log = logging.getLogger("pipeline.stages.infer_seco")

class _Fidelity:
    """Confusion matrices of full-resolution vs cached logits per split role."""

    def __init__(self, num_classes: int, roles: list[str]) -> None:
        self.cm = {(r, kind): ConfusionMatrix(num_classes) for r in roles for kind in ("full", "cache")}

    def update(self, role: str, gt: np.ndarray, full: torch.Tensor, cached: np.ndarray, stride: int) -> None:
        self.cm[(role, "full")].update(gt, full.argmax(0).cpu().numpy())
        up = upsample_scores(cached.astype(np.float32), stride, gt.shape)
        self.cm[(role, "cache")].update(gt, up.argmax(0))

    def gathered(self) -> dict:
        mats = all_gather_objects({k: cm.matrix for k, cm in self.cm.items()})
        return {k: sum(m[k] for m in mats) for k in self.cm}


def _infer(rank: int, world: int, cfg: dict, index_path: str, model_path: str, cams_out: str, logits_out: str,
           metrics_out: str) -> None:
    seco = require(cfg, "seco")
    infer = seco["infer"]
    device = rank_device(select_device(require(cfg, "runtime.device")))
    setup_precision(device, "off")  # float32 logits: the cache's fidelity is measured against them
    ds, index = open_indexed(cfg, index_path)
    state, _ = load_final(model_path)
    net = build_seco_net(seco, ds.num_classes, None)
    net.load_state_dict(state)
    net.to(device).eval()
    cam_ids = set(split_ids(index, "train", "eval"))
    seg_ids = split_ids(index, "train", "eval", "val")
    roles = [r for r in ("eval", "val") if r in index["splits"] and index["splits"][r]["has_masks"]]
    role_ids = {r: set(index["splits"][r]["ids"]) for r in roles}
    mine = [seg_ids[i] for i in shard_indices(len(seg_ids), rank, world)]
    fidelity = _Fidelity(ds.num_classes, roles)
    stride, classes_all = infer["logits_stride"], np.arange(ds.num_classes, dtype=np.int64)
    t0, pixels = time.perf_counter(), 0
    provenance = {"seco": seco, "dataset": cfg["dataset"]}
    with ArtifactWriter(rank_shard_path(cams_out, rank, world), "scores", ds.class_names, provenance) as cam_w, \
            ArtifactWriter(rank_shard_path(logits_out, rank, world), "logits", ds.class_names, provenance) as seg_w:
        for image_id in progress(mine, f"infer_seco rank {rank}"):
            img = ds.image(image_id)
            size = img.shape[:2]
            x = torch.from_numpy(to_chw(normalize(img)))[None].to(device)
            if image_id in cam_ids:
                classes = ds.present_classes(image_id)
                cam_w.write_scores(image_id, cam_seeds(net, x, size, classes, infer), classes, size,
                                   stride=infer["cam_stride"])
            full = seg_logits(net, x, size, infer["seg_scales"], infer)
            cached = round_mantissa(fit_scores(full, stride).cpu().numpy(), infer["logits_mantissa_bits"])
            # one chunk per image (not per class plane): per-chunk overhead dominates small images
            seg_w.write_array(image_id, cached, classes=classes_all, orig_size=np.asarray(size, np.int64),
                              stride=stride)
            pixels += size[0] * size[1]
            for role in roles:
                if image_id in role_ids[role]:
                    fidelity.update(role, ds.mask(image_id), full, cached, stride)
    dt = time.perf_counter() - t0
    log.info("rank %d: %d images in %.1fs (%.2f images/s)", rank, len(mine), dt, len(mine) / max(dt, 1e-9))
    mats = fidelity.gathered()
    pixels = sum(all_gather_objects(pixels))
    merge_rank_shards([cams_out, logits_out], rank, world)
    if rank != 0:
        return
    size = Path(logits_out).stat().st_size
    summary = {"logits_stride": stride, "logits_bytes": size, "image_pixels": pixels,
               "bytes_per_pixel": size / max(pixels, 1), "cams_bytes": Path(cams_out).stat().st_size,
               "num_images": len(seg_ids), "resize": infer["resize"], "seg_scales": infer["seg_scales"]}
    for role in roles:
        # a difference of two mIoUs on the same images: the convention is fixed (SeCo's), not eval's
        full_miou, cache_miou = (scores(mats[(role, k)], "present")["miou"] for k in ("full", "cache"))
        summary[role] = {"full_res_miou": full_miou, "cache_miou": cache_miou, "cache_minus_full": cache_miou - full_miou}
        log.info("%s: seg mIoU full-res float32 %.4f, cache (stride %d float16) %.4f, difference %+.4f",
                 role, full_miou, stride, cache_miou, cache_miou - full_miou)
    log.info("seg logits: %d bytes for %d image pixels: %.4f bytes/pixel", size, pixels, summary["bytes_per_pixel"])
    if summary["bytes_per_pixel"] > 1.0:
        log.warning("seg logits cache exceeds 1 byte per image pixel: raise seco.infer.logits_stride")
    write_summary(metrics_out, summary)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--cams", required=True, help="CAM seeds (make_cam schema)")
    p.add_argument("--logits", required=True, help="segmentation logits cache")
    p.add_argument("--metrics", required=True, help="cache size and fidelity JSON")
    args, cfg = parse(p, argv)
    run_gpu_job(_infer, args.gpus, cfg, args.index, args.model, args.cams, args.logits, args.metrics)


if __name__ == "__main__":
    main()
