"""Stage: random-walk pseudo masks of one method from its IRN boundary network, by one of two recipes.

`--recipe irn` (the ResNet CAM methods; IRN's step/make_sem_seg_labels.py): for every training and
evaluation image, the boundary map of the trained IRN (image + flip), the
method's stride-4 CAMs (IRN's `cam`, results/cam/<m>/cams_strided.h5) damped by (1 - boundary) and propagated by the random walk of the
boundary's affinities (radius `irn.rw_radius`, beta `irn.beta`, 2^`irn.exp_times` steps), then
upsampled, divided by their maximum and decided against a constant background `irn.bg_threshold`.
Writes uint8 masks (artifact `mask`, no uncertain pixels) that eval_masks and DeepLab read like
any other masks file; logs images/s.

`--recipe psa` (the MCTformer-based methods; PSA's infer_aff.py as MCTformer's run_psa.sh runs it,
`pipeline.irn.psa`): the method's full-resolution maps (results/cam/<m>/cams.h5) with a background
plane (`irn.psa.bg_score`, or PSA's (1 - max)^`irn.psa.alpha`), average-pooled to the stride-
`irn.psa.stride` grid, walked together by 2^`irn.psa.logt` steps of the column-normalised
affinity^`irn.psa.beta` (radius `irn.psa.radius`) of the boundary map max-pooled to that grid,
upsampled, argmax. Same artifact, attrs `labels: random_walk_psa`.
"""

from __future__ import annotations

import logging
import time

import torch

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require, run_gpu_job, split_ids
from pipeline.errors import PipelineError, cli_entry
from pipeline.io.h5store import ArtifactReader, ArtifactWriter, merge_rank_shards, rank_shard_path
from pipeline.io.progress import progress
from pipeline.irn.affinity import random_walk, walk_to_mask
from pipeline.irn.edge import EdgeDisplacementNet, check_grid, create_irn_backbone, edge_map
from pipeline.irn.psa import psa_mask
from pipeline.runtime.checkpoint import load_final
from pipeline.runtime.device import select_device
from pipeline.runtime.distributed import rank_device, shard_indices

log = logging.getLogger("pipeline.stages.make_sem_seg_labels")


def load_irn(path: str, device: torch.device) -> EdgeDisplacementNet:
    state, meta = load_final(path)
    if "backbone" not in meta or "irn" not in meta:
        raise PipelineError(f"{path}: not an IRN model written by train_irn (meta lacks backbone/irn)")
    net = EdgeDisplacementNet(create_irn_backbone(meta["backbone"]), displacement=meta["irn"]["displacement"])
    net.load_state_dict(state)
    return net.to(device).eval()


RECIPES = ("irn", "psa")


def _infer(rank: int, world: int, cfg: dict, index_path: str, model_path: str, cams_path: str, method: str,
           out: str, recipe: str = "irn") -> None:
    irn = require(cfg, "irn")
    device = rank_device(select_device(require(cfg, "runtime.device")))
    ds, index = open_indexed(cfg, index_path)
    net = load_irn(model_path, device)
    cams = ArtifactReader(cams_path, expect="scores")
    ids = split_ids(index, "train", "eval")
    mine = [ids[i] for i in shard_indices(len(ids), rank, world)]
    target = rank_shard_path(out, rank, world)
    provenance = {"irn": irn, "cams": cams_path, "model": model_path, "dataset": cfg["dataset"], "recipe": recipe}
    labels = "random_walk" if recipe == "irn" else f"random_walk_{recipe}"
    t0 = time.perf_counter()
    with ArtifactWriter(target, "mask", ds.class_names, provenance,
                        extra_attrs={"method": method, "labels": labels, "crf": False}) as w:
        for image_id in progress(mine, f"make_sem_seg_labels {method} rank {rank}"):
            if image_id not in cams:
                raise PipelineError(f"{cams_path}: no CAMs for image {image_id!r}")
            img = ds.image(image_id)
            edge = edge_map(net, img, irn["crop_size"], device)
            if recipe == "psa":  # the maps at full resolution, pooled to the walk grid (pipeline.irn.psa)
                planes, classes = cams.scores(image_id, full_res=True)
                w.write_mask(image_id, psa_mask(planes, classes.tolist(), edge, irn["psa"]))
                continue
            planes, classes = cams.scores(image_id, full_res=False)
            stride = int(cams.attrs(image_id)["stride"])
            check_grid(planes.shape[1:], edge.shape, stride, cams_path, image_id)
            with torch.no_grad():
                rw = random_walk(torch.from_numpy(planes).to(device), edge, irn["rw_radius"], irn["beta"],
                                 irn["exp_times"])
            w.write_mask(image_id, walk_to_mask(rw.cpu().numpy(), classes.tolist(), img.shape[:2], stride,
                                                irn["bg_threshold"]))
    dt = time.perf_counter() - t0
    log.info("%s rank %d: %d random-walk masks in %.1fs (%.2f images/s)", method, rank, len(mine), dt,
             len(mine) / max(dt, 1e-9))
    merge_rank_shards([out], rank, world)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--method", required=True)
    p.add_argument("--model", required=True, help="the method's IRN model (results/irn/<m>/model_final.pth)")
    p.add_argument("--cams", required=True, help="irn: the method's stride-4 CAMs, IRN's `cam` (results/cam/<m>/cams_strided.h5); "
                   "psa: its maps read at full resolution (results/cam/<m>/cams.h5)")
    p.add_argument("--recipe", choices=RECIPES, default="irn",
                   help="irn: IRN's walk (ResNet CAM methods) | psa: PSA's, as MCTformer runs it (irn.psa)")
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    run_gpu_job(_infer, args.gpus, cfg, args.index, args.model, args.cams, args.method, args.out, args.recipe)


if __name__ == "__main__":
    main()
