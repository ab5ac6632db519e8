"""Stage: dense-CRF refinement of one shard of images, spread over worker processes.

  --target masks        a method's pseudo masks from its seeds (recipe `masks.methods.<method>`),
                        for the training + evaluation images
  --target predictions  final DeepLab predictions from their logits (preset `crf.predictions`),
                        for every image of the logits file

pydensecrf is single-threaded, so images are sharded twice: across Snakemake jobs
(`--shard i-of-n`, Snakemake's scatteritem: every n-th image from the (i-1)-th) and across
`--processes` worker processes within a job. Shards joined by `gather_shards` hold exactly the
masks an unsharded run writes. Logs images/s.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import re
import time
from collections.abc import Iterator
from dataclasses import asdict

from pipeline.cli import open_indexed, parse, split_ids, stage_parser
from pipeline.errors import PipelineError, cli_entry
from pipeline.io.h5store import ArtifactReader, ArtifactWriter
from pipeline.io.progress import progress
from pipeline.masks.pseudo import MaskRecipe, method_recipe, prediction_recipe, refined_mask

log = logging.getLogger("pipeline.stages.crf")

TARGETS = ("masks", "predictions")


def parse_shard(text: str) -> tuple[int, int]:
    """'2-of-4' -> (2, 4), 1-based as Snakemake's scatteritem."""
    m = re.fullmatch(r"(\d+)-of-(\d+)", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise PipelineError(f"--shard {text!r}: expected i-of-n with 1 <= i <= n")
    return int(m.group(1)), int(m.group(2))


def shard_ids(ids: list[str], shard: tuple[int, int]) -> list[str]:
    """Interleaved, so every shard gets a similar mix of image sizes."""
    i, n = shard
    return ids[i - 1 :: n]


def recipe_for(cfg: dict, target: str, method: str) -> MaskRecipe:
    return method_recipe(cfg, method) if target == "masks" else prediction_recipe(cfg)


class _Refiner:
    """Everything one worker needs, built inside the worker (readers are not shared across processes)."""

    def __init__(self, cfg: dict, index_path: str, source: str, target: str, method: str) -> None:
        self.recipe = recipe_for(cfg, target, method)
        self.ds, _ = open_indexed(cfg, index_path)
        self.reader = ArtifactReader(source)
        self.target = target

    def __call__(self, image_id: str) -> tuple[str, object, float]:
        """(id, refined mask, CPU seconds this worker spent on the image)."""
        t0 = time.process_time()
        planes, classes = self.reader.scores(image_id)
        present = self.ds.present_classes(image_id) if self.target == "masks" else None
        mask = refined_mask(self.recipe, self.ds.image(image_id), planes, classes, present)
        return image_id, mask, time.process_time() - t0


_WORKER: _Refiner | None = None


def _init_worker(*args) -> None:
    global _WORKER
    _WORKER = _Refiner(*args)


def _work(image_id: str):
    assert _WORKER is not None
    return _WORKER(image_id)


def refine_all(ids: list[str], processes: int, *refiner_args) -> Iterator[tuple[str, object, float]]:
    """(id, mask, CPU seconds) in the order of `ids`, computed in `processes` worker processes."""
    if processes <= 1:
        refiner = _Refiner(*refiner_args)
        for image_id in ids:
            yield refiner(image_id)
        return
    # forkserver: workers fork from a fresh server process that imported this (torch-free) module once, so they
    # start in milliseconds (spawn re-imports torch per worker) and never inherit an OpenMP pool
    # the parent may have started (a plain fork could deadlock on it).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    with ctx.Pool(processes, initializer=_init_worker, initargs=refiner_args) as pool:
        yield from pool.imap(_work, ids, chunksize=2)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--target", required=True, choices=TARGETS)
    p.add_argument("--method", required=True, help="masks: selects masks.methods.<method>; predictions: for the log")
    p.add_argument("--source", required=True, help="seeds (cams.h5 / seg_logits.h5) or DeepLab logits.h5")
    p.add_argument("--shard", default="1-of-1", help="i-of-n: this job's share of the images")
    p.add_argument("--processes", type=int, default=1, help="worker processes (the rule's threads)")
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    recipe = recipe_for(cfg, args.target, args.method)
    ds, index = open_indexed(cfg, args.index)
    reader = ArtifactReader(args.source)
    recipe.check_kind(reader.root_attrs["artifact"], args.source)
    all_ids = split_ids(index, "train", "eval") if args.target == "masks" else sorted(reader.ids())
    reader.close()
    shard = parse_shard(args.shard)
    ids = shard_ids(all_ids, shard)
    processes = max(1, min(args.processes, len(ids)))
    section = cfg["masks"]["methods"][args.method] if args.target == "masks" else cfg["crf"]["predictions"]
    provenance = {"recipe": section, "crf": asdict(recipe.crf), "source": args.source, "dataset": cfg["dataset"]}
    t0, cpu = time.perf_counter(), 0.0
    with ArtifactWriter(args.out, "mask", ds.class_names, provenance,
                        extra_attrs={"method": args.method, "labels": recipe.labels, "crf": True}) as w:
        refined = refine_all(ids, processes, cfg, args.index, args.source, args.target, args.method)
        for image_id, mask, seconds in progress(refined, f"crf {args.target}/{args.method} shard {args.shard}",
                                                total=len(ids)):
            w.write_mask(image_id, mask)
            cpu += seconds
    dt = time.perf_counter() - t0
    # Wall-clock rate (what the job achieved, start-up included) and the per-CPU-second rate of the
    # workers (independent of other load on the machine: P free cores give about P times that).
    log.info("crf %s/%s shard %s: %d images in %.1fs on %d process(es): %.2f images/s; %.1f ms CPU per image "
             "(%.2f images per CPU-second)", args.target, args.method, args.shard, len(ids), dt, processes,
             len(ids) / max(dt, 1e-9), 1000 * cpu / max(len(ids), 1), len(ids) / max(cpu, 1e-9))


if __name__ == "__main__":
    main()
