"""Stage: multi-scale + flip DeepLab logits for the val and decoupled splits and the report's
qualitative images.

kazuto1011's inference fuses the logits of scales {1.0, 0.75, 0.5} by the pixel-wise max on
the scale-1 logit grid; here every scale's flip is fused too (`deeplab.test_scales`,
`deeplab.test_flip`). Logits are stored for all classes at the network's output stride
(artifact `logits`, float16; readers upsample to H x W); argmax gives the prediction before the
CRF, the crf rule the one after. Ranks split the images (DDP) and rank 0 merges the shards.
"""

from __future__ import annotations

import logging
import time

import torch

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require, run_gpu_job, split_ids
from pipeline.data.transforms import normalize, to_chw
from pipeline.deeplab.model import build_deeplab, multiscale_logits
from pipeline.errors import cli_entry
from pipeline.io.h5store import ArtifactWriter, merge_rank_shards, rank_shard_path
from pipeline.io.progress import progress
from pipeline.report.subset import qualitative_ids
from pipeline.runtime.checkpoint import load_final
from pipeline.runtime.device import select_device
from pipeline.runtime.distributed import rank_device, shard_indices

log = logging.getLogger("pipeline.stages.infer_deeplab")


def inference_ids(cfg: dict, index: dict) -> list[str]:
    """val + decoupled (when configured) + the qualitative subset of the eval split."""
    report = require(cfg, "report")
    extra = qualitative_ids(index, int(report["qualitative_images"]), int(cfg.get("seed", 0)))
    return list(dict.fromkeys(split_ids(index, "val", "decoupled") + extra))


def _infer(rank: int, world: int, cfg: dict, index_path: str, model_path: str, out: str, threads: int = 0) -> None:
    if threads:  # DDP ranks are fresh processes: apply --threads to each of them
        torch.set_num_threads(threads)
    dl = require(cfg, "deeplab")
    device = rank_device(select_device(require(cfg, "runtime.device")))
    ds, index = open_indexed(cfg, index_path)
    state, meta = load_final(model_path)
    net = build_deeplab(dl, ds.num_classes, pretrained=None)
    net.load_state_dict(state)
    net.to(device).eval()
    ids = inference_ids(cfg, index)
    mine = [ids[i] for i in shard_indices(len(ids), rank, world)]
    classes = list(range(ds.num_classes))
    t0 = time.perf_counter()
    provenance = {"deeplab": dl, "dataset": cfg["dataset"], "method": meta.get("method")}
    with ArtifactWriter(rank_shard_path(out, rank, world), "logits", ds.class_names, provenance, extra_attrs={"method": str(meta.get("method"))}) as w:
        for image_id in progress(mine, f"infer_deeplab rank {rank}"):
            img = ds.image(image_id)
            x = torch.from_numpy(to_chw(normalize(img)))[None].to(device)
            logits = multiscale_logits(net, x, dl["test_scales"], dl["test_flip"])
            w.write_scores(image_id, logits.cpu().numpy(), classes, img.shape[:2], stride=net.stride)
    dt = time.perf_counter() - t0
    log.info("rank %d: %d images in %.1fs (%.2f images/s)", rank, len(mine), dt, len(mine) / max(dt, 1e-9))
    merge_rank_shards([out], rank, world)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    run_gpu_job(_infer, args.gpus, cfg, args.index, args.model, args.out, args.threads)


if __name__ == "__main__":
    main()
