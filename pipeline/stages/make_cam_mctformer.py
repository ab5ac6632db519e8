"""Stage: MCTformer-V2's localisation maps of the training images into the HDF5 score store.

The official generation (`--attention-type fused --patch-attn-refine`, `pipeline.mctformer.cams`):
class-to-patch attention of the last `mctformer.cam_layers` blocks times the ReLU'd PatchCAM,
refined by the patch-to-patch attention of all blocks (`mctformer.patch_attn_refine`), over `mctformer.scales` and their flips,
for the present classes only, each class min-max normalised over the image. Stored like IRN's
CAMs (results/cam/<method>/cams.h5, docs/ARTIFACTS.md): float16 cells at stride
`mctformer.cam_stride`, fitted so that the readers' bilinear upsampling reproduces the
full-resolution maps, so eval_cam, export_masks and the CRF read them as any CAM method's.
"""

from __future__ import annotations

import logging
import time

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require, run_gpu_job, split_ids
from pipeline.errors import cli_entry
from pipeline.io.h5store import ArtifactWriter, fit_scores, merge_rank_shards, rank_shard_path
from pipeline.io.progress import progress
from pipeline.mctformer.cams import multiscale_maps
from pipeline.mctformer.model import build_mctformer
from pipeline.runtime.checkpoint import load_final
from pipeline.runtime.device import select_device, setup_precision
from pipeline.runtime.distributed import rank_device, shard_indices

log = logging.getLogger("pipeline.stages.make_cam_mctformer")


def _infer(rank: int, world: int, cfg: dict, index_path: str, model_path: str, out: str) -> None:
    mct = require(cfg, "mctformer")
    device = rank_device(select_device(require(cfg, "runtime.device")))
    amp = setup_precision(device, require(cfg, "runtime.amp"))
    ds, index = open_indexed(cfg, index_path)
    state, _ = load_final(model_path)
    net = build_mctformer(mct, ds.num_classes, pretrained=None)  # every weight comes from the model file
    net.load_state_dict(state)
    net.to(device).eval()
    ids = split_ids(index, "train", "eval")
    mine = [ids[i] for i in shard_indices(len(ids), rank, world)]
    stride = mct["cam_stride"]
    t0 = time.perf_counter()
    with ArtifactWriter(rank_shard_path(out, rank, world), "scores", ds.class_names,
                        {"mctformer": mct, "dataset": cfg["dataset"]}) as writer:
        for image_id in progress(mine, f"make_cam_mctformer rank {rank}"):
            img = ds.image(image_id)
            classes = ds.present_classes(image_id)
            maps = multiscale_maps(net, img, classes, mct["scales"], layers=mct["cam_layers"],
                                   patch_refine=mct["patch_attn_refine"], device=device, amp=amp)
            writer.write_scores(image_id, fit_scores(maps, stride), classes, img.shape[:2], stride=stride)
    dt = time.perf_counter() - t0
    log.info("rank %d: %d images in %.1fs (%.2f images/s)", rank, len(mine), dt, len(mine) / max(dt, 1e-9))
    merge_rank_shards([out], rank, world)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--model", required=True, help="results/cam/mctformer/model_final.pth")
    p.add_argument("--out", required=True, help="results/cam/mctformer/cams.h5")
    args, cfg = parse(p, argv)
    run_gpu_job(_infer, args.gpus, cfg, args.index, args.model, args.out)


if __name__ == "__main__":
    main()
