"""Stage: SeCo's own segmentation quality before CRF (the official "raw seg score").

Argmax over all classes of the cached multi-scale logits (`results/seco/seg_logits.h5`, read back
at full resolution) on the val split and on the eval split (the training images whose pseudo
masks are scored). JSON: per split the SegEvaluator summary (mIoU, per-class IoU, co-occurrence
confusion, context false activation on synthetic data), plus the cache's size and its mIoU
difference to full-resolution float32 logits measured by infer_seco. TSV: per-class scores on val.
"""

from __future__ import annotations

import json
import logging

from pipeline.cli import gpu_stage_parser, open_indexed, parse
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_class_table, write_summary
from pipeline.eval.pairs import cooccurring_pairs
from pipeline.eval.segmentation import SegEvaluator, miou_convention
from pipeline.io.h5store import ArtifactReader

log = logging.getLogger("pipeline.stages.eval_seco")

ROLES = ("val", "eval")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--logits", required=True)
    p.add_argument("--infer-metrics", required=True, help="infer_seco's cache fidelity JSON")
    p.add_argument("--summary", required=True)
    p.add_argument("--classes", required=True, help="per-class TSV on val")
    args, cfg = parse(p, argv)
    ds, index = open_indexed(cfg, args.index)
    reader = ArtifactReader(args.logits, expect="logits")
    try:
        cache = json.loads(open(args.infer_metrics).read())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{args.infer_metrics}: cannot read infer_seco metrics ({exc})") from exc
    pairs = cooccurring_pairs(ds, index)
    summary: dict = {"cache": cache}
    evaluators = {}
    for role in ROLES:
        split = index["splits"].get(role)
        if split is None or not split["has_masks"]:
            continue
        ev = SegEvaluator(ds, pairs, miou_convention(cfg))
        for image_id in split["ids"]:
            logits, classes = reader.scores(image_id)
            ev.update(image_id, classes[logits.argmax(0)].astype("uint8"))
        evaluators[role] = ev
        summary[role] = {**ev.summary(), "split": split["split"], "num_images": len(split["ids"])}
        log.info("%s (%s, %d images): seg mIoU %.4f; co-occurrence confusion %s", role, split["split"],
                 len(split["ids"]), summary[role]["miou"], summary[role]["cooccurrence_confusion"])
    if "val" not in evaluators:
        raise PipelineError("dataset index: the val split has no masks, nothing to evaluate")
    write_summary(args.summary, summary)
    write_class_table(args.classes, evaluators["val"].scores(), ds.class_names)


if __name__ == "__main__":
    main()
