"""Stage: final segmentation quality of one method's DeepLab, before and after the CRF.

On the val split (and the decoupled split where configured: contexts without their usual
objects, where context false activation is measured): mIoU, per-class IoU, co-occurrence
confusion ratios, context false activation; before the CRF = argmax of the multi-scale logits,
after = the crf rule's masks. Also writes the CRF predictions as VOC palette PNGs.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.cli import open_indexed, parse, stage_parser
from pipeline.data.palette import write_mask_folder
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_class_table, write_summary
from pipeline.eval.pairs import cooccurring_pairs
from pipeline.eval.segmentation import SegEvaluator, miou_convention
from pipeline.io.h5store import ArtifactReader
from pipeline.io.progress import progress

log = logging.getLogger("pipeline.stages.eval_deeplab")

SPLIT_ROLES = ("val", "decoupled")


def argmax_prediction(logits: ArtifactReader, image_id: str) -> np.ndarray:
    planes, classes = logits.scores(image_id)
    return classes.astype(np.uint8)[planes.argmax(0)]


def evaluate_split(ds, pairs, ids: list[str], logits: ArtifactReader, crf: ArtifactReader, convention: str) -> dict:
    raw, refined = SegEvaluator(ds, pairs, convention), SegEvaluator(ds, pairs, convention)
    for image_id in progress(ids, "eval_deeplab"):
        gt = ds.mask(image_id)
        if gt is None:
            raise PipelineError(f"image {image_id!r} has no ground-truth mask to evaluate against")
        if image_id not in logits or image_id not in crf:
            raise PipelineError(f"{logits.path} / {crf.path}: no prediction for {image_id!r}")
        raw.update(image_id, argmax_prediction(logits, image_id), gt)
        refined.update(image_id, crf.mask(image_id), gt)
    return {"raw": raw, "crf": refined}


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--logits", required=True, help="infer_deeplab's logits.h5")
    p.add_argument("--crf", required=True, help="the CRF-refined predictions (pred_crf.h5)")
    p.add_argument("--summary", required=True)
    p.add_argument("--classes-raw", required=True, help="per-class TSV on val before the CRF")
    p.add_argument("--classes-crf", required=True, help="per-class TSV on val after the CRF")
    p.add_argument("--png-dir", required=True, help="VOC palette PNGs of the CRF predictions")
    args, cfg = parse(p, argv)
    ds, index = open_indexed(cfg, args.index)
    pairs = cooccurring_pairs(ds, index)
    logits, crf = ArtifactReader(args.logits, expect="logits"), ArtifactReader(args.crf, expect="mask")
    out: dict = {"method": args.method, "class_names": ds.class_names}
    for role in SPLIT_ROLES:
        split = index["splits"].get(role)
        if split is None or not split.get("has_masks", True):
            continue
        evs = evaluate_split(ds, pairs, split["ids"], logits, crf, miou_convention(cfg))
        out[role] = {"split": split["split"], "num_images": len(split["ids"]),
                     **{k: ev.summary() for k, ev in evs.items()}}
        if role == "val":
            write_class_table(args.classes_raw, evs["raw"].scores(), ds.class_names)
            write_class_table(args.classes_crf, evs["crf"].scores(), ds.class_names)
    if "val" not in out:
        raise PipelineError("eval_deeplab: the index has no val split with masks (config key dataset.splits.val)")
    write_mask_folder(crf, args.png_dir)
    write_summary(args.summary, out)
    val = out["val"]
    msg = f"{args.method}: val mIoU {val['raw']['miou']:.4f} before CRF, {val['crf']['miou']:.4f} after"
    if "decoupled" in out:
        msg += f"; decoupled context false activation {out['decoupled']['crf'].get('context_false_activation_mean')}"
    log.info(msg)


if __name__ == "__main__":
    main()
