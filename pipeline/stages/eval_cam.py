"""Stage: CAM seed quality on the evaluation split (IRN's eval_cam) + a threshold sweep.

Scores = the CAM cache read back at full resolution (make_cam's cache reproduces IRN's
`high_res`, which IRN's eval_cam scores). Seeds = argmax over [constant background plane =
threshold, CAMs of present classes]; the threshold is per method: IRN uses 0.15 (baseline, CSD),
SeCo's infer_cam uses 0.5. mIoU averages classes as `eval.miou_convention` says (IRN: `all`).
Writes a JSON summary (mIoU and its convention, co-occurrence confusion ratios, context false
activation on synthetic data), a per-class TSV and a threshold-sweep TSV.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_class_table, write_summary
from pipeline.eval.pairs import cooccurring_pairs
from pipeline.eval.segmentation import SegEvaluator, miou_convention
from pipeline.io.atomic import write_text_atomic
from pipeline.io.h5store import ArtifactReader
from pipeline.io.progress import progress
from pipeline.irn.cams import scores_to_label

log = logging.getLogger("pipeline.stages.eval_cam")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--method", required=True, help="method name; selects eval_cam.bg_threshold.<method>")
    p.add_argument("--cams", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--sweep", required=True)
    args, cfg = parse(p, argv)
    ev_cfg = dict(require(cfg, "eval_cam"))
    thresholds_by_method = ev_cfg["bg_threshold"]
    if args.method not in thresholds_by_method:
        raise PipelineError(f"config key eval_cam.bg_threshold.{args.method}: missing")
    ev_cfg["bg_threshold"] = float(thresholds_by_method[args.method])
    ds, index = open_indexed(cfg, args.index)
    reader = ArtifactReader(args.cams, expect="scores")
    pairs = cooccurring_pairs(ds, index)
    thresholds = sorted({float(t) for t in ev_cfg["sweep"]} | {float(ev_cfg["bg_threshold"])})
    convention = miou_convention(cfg)
    evaluators = {t: SegEvaluator(ds, pairs, convention) for t in thresholds}
    # Chance reference: uniform random scores for the same present classes, same protocol.
    chance = SegEvaluator(ds, pairs, convention)
    rng = np.random.default_rng(0)
    ids = index["splits"]["eval"]["ids"]
    for image_id in progress(ids, f"eval_cam {args.method}"):
        scores, classes = reader.scores(image_id)
        gt = ds.mask(image_id)
        for t, ev in evaluators.items():
            ev.update(image_id, scores_to_label(scores, classes, t), gt)
        noise = rng.random(scores.shape, dtype=np.float32)
        noise /= noise.reshape(len(noise), -1).max(1)[:, None, None] if len(noise) else 1
        chance.update(image_id, scores_to_label(noise, classes, float(ev_cfg["bg_threshold"])), gt)
    main_ev = evaluators[float(ev_cfg["bg_threshold"])]
    summary = main_ev.summary()
    sweep = {t: ev.summary()["miou"] for t, ev in evaluators.items()}
    best = max(sweep, key=lambda t: sweep[t])
    summary.update(bg_threshold=ev_cfg["bg_threshold"], num_images=len(ids), split=index["splits"]["eval"]["split"],
                   best_threshold=best, best_miou=sweep[best], artifact_bytes=reader.nbytes_on_disk(),
                   chance_miou=chance.summary()["miou"])
    write_summary(args.summary, summary)
    write_class_table(args.classes, main_ev.scores(), ds.class_names)
    write_text_atomic(args.sweep, "bg_threshold\tmiou\n" + "".join(f"{t:.2f}\t{m:.6f}\n" for t, m in sweep.items()))
    log.info("seed mIoU %.4f at threshold %.2f (best %.4f at %.2f; chance %.4f); co-occurrence confusion %s",
             summary["miou"], ev_cfg["bg_threshold"], sweep[best], best, summary["chance_miou"],
             summary["cooccurrence_confusion"])


if __name__ == "__main__":
    main()
