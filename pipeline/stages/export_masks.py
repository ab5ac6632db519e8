"""Stage: a method's pseudo masks before the CRF, for every training and evaluation image.

The recipe is `masks.methods.<method>` (see pipeline/pseudo_masks.py): IRN's dual thresholds
(0.30 / 0.05, 255 = uncertain) or the single threshold on CAM scores (`results/cam/<m>/cams.h5`),
or the argmax of segmentation logits (SeCo's `results/seco/seg_logits.h5`). Writes uint8 masks
(artifact `mask`) and logs images/s.
"""

from __future__ import annotations

import logging
import time

from pipeline.cli import open_indexed, parse, split_ids, stage_parser
from pipeline.errors import cli_entry
from pipeline.io.h5store import ArtifactReader, ArtifactWriter
from pipeline.io.progress import progress
from pipeline.masks.pseudo import method_recipe, raw_mask

log = logging.getLogger("pipeline.stages.export_masks")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--method", required=True, help="selects masks.methods.<method>")
    p.add_argument("--source", required=True, help="the method's seeds: cams.h5 (scores) or seg_logits.h5 (logits)")
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    recipe = method_recipe(cfg, args.method, with_crf=False)
    ds, index = open_indexed(cfg, args.index)
    reader = ArtifactReader(args.source)
    recipe.check_kind(reader.root_attrs["artifact"], args.source)
    ids = split_ids(index, "train", "eval")
    provenance = {"masks": cfg["masks"]["methods"][args.method], "source": args.source, "dataset": cfg["dataset"]}
    t0, uncertain, pixels = time.perf_counter(), 0, 0
    with ArtifactWriter(args.out, "mask", ds.class_names, provenance,
                        extra_attrs={"method": args.method, "labels": recipe.labels, "crf": False}) as w:
        for image_id in progress(ids, f"export_masks {args.method}"):
            planes, classes = reader.scores(image_id)
            mask = raw_mask(recipe, planes, classes, ds.present_classes(image_id))
            w.write_mask(image_id, mask)
            uncertain += int((mask == 255).sum())
            pixels += mask.size
    dt = time.perf_counter() - t0
    log.info("%s: %d masks (%s) in %.1fs (%.1f images/s); %.1f%% of pixels uncertain", args.method, len(ids),
             recipe.labels, dt, len(ids) / max(dt, 1e-9), 100 * uncertain / max(pixels, 1))


if __name__ == "__main__":
    main()
