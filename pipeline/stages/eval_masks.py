"""Stage: pseudo-mask quality on the evaluation split, before and after the CRF.

For masks.h5 (raw) and crf.h5 (refined): mIoU with uncertain (255) pixels counted as
background (IRN's eval_sem_seg), the mIoU of the confident pixels only, the uncertain fraction,
co-occurrence confusion ratios and, on synthetic data, context false activation. Writes one JSON
and one per-class TSV per mask file. With `--rw` alone (rule eval_rw_masks) it evaluates IRN's
random-walk masks (rw.h5) under the key "rw" instead.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.cli import open_indexed, parse, stage_parser
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import ConfusionMatrix, scores, write_class_table, write_summary
from pipeline.eval.pairs import cooccurring_pairs
from pipeline.eval.segmentation import SegEvaluator, miou_convention
from pipeline.io.h5store import ArtifactReader
from pipeline.io.progress import progress

log = logging.getLogger("pipeline.stages.eval_masks")


def evaluate_masks(ds, pairs: list[tuple[int, int]], reader: ArtifactReader, ids: list[str],
                   convention: str) -> tuple[dict, dict]:
    """(summary, per-class scores) of the masks of `ids` in `reader` against the GT; mIoU under
    `convention` (eval.miou_convention)."""
    ev = SegEvaluator(ds, pairs, convention)
    confident = ConfusionMatrix(ds.num_classes, pred_ignore_as=None)
    uncertain = pixels = 0
    for image_id in progress(ids, "eval_masks"):
        if image_id not in reader:
            raise PipelineError(f"{reader.path}: no mask for evaluation image {image_id!r}")
        pred, gt = reader.mask(image_id), ds.mask(image_id)
        if gt is None:
            raise PipelineError(f"evaluation image {image_id!r} has no ground-truth mask")
        if pred.shape != gt.shape:
            raise PipelineError(f"{reader.path}: mask of {image_id!r} is {pred.shape}, its GT {gt.shape}")
        ev.update(image_id, pred, gt)
        confident.update(gt, pred)
        uncertain += int((pred == 255).sum())
        pixels += pred.size
    summary = ev.summary()
    summary.update(miou_confident=scores(confident, convention)["miou"], uncertain_fraction=uncertain / max(pixels, 1),
                   num_images=len(ids))
    return summary, ev.scores()


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--masks", help="masks.h5 (before the CRF)")
    p.add_argument("--crf", help="crf.h5 (after the CRF)")
    p.add_argument("--rw", help="rw.h5 (IRN's random walk)")
    p.add_argument("--summary", required=True)
    p.add_argument("--classes-raw")
    p.add_argument("--classes-crf")
    p.add_argument("--classes-rw")
    args, cfg = parse(p, argv)
    files = [(name, path, table) for name, path, table in (("raw", args.masks, args.classes_raw),
                                                            ("crf", args.crf, args.classes_crf),
                                                            ("rw", args.rw, args.classes_rw)) if path]
    if not files or any(table is None for _, _, table in files):
        raise PipelineError("eval_masks: give --masks, --crf and/or --rw, each with its --classes-* table")
    ds, index = open_indexed(cfg, args.index)
    pairs = cooccurring_pairs(ds, index)
    ids = index["splits"]["eval"]["ids"]
    out = {"method": args.method, "split": index["splits"]["eval"]["split"], "num_images": len(ids),
           "class_names": ds.class_names}
    for name, path, table in files:
        summary, per_class = evaluate_masks(ds, pairs, ArtifactReader(path, expect="mask"), ids, miou_convention(cfg))
        out[name] = summary
        write_class_table(table, per_class, ds.class_names)
    write_summary(args.summary, out)
    if "raw" not in out or "crf" not in out:
        for name, _, _ in files:
            log.info("%s %s masks: mIoU %.4f; uncertain %.1f%%", args.method, name, out[name]["miou"],
                     100 * out[name]["uncertain_fraction"])
        return
    gain = np.float64(out["crf"]["miou"]) - np.float64(out["raw"]["miou"])
    log.info("%s masks: mIoU %.4f before CRF, %.4f after (%+.4f); uncertain %.1f%% -> %.1f%%", args.method,
             out["raw"]["miou"], out["crf"]["miou"], gain, 100 * out["raw"]["uncertain_fraction"],
             100 * out["crf"]["uncertain_fraction"])


if __name__ == "__main__":
    main()
