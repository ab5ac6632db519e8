"""Stage: SeCo's patch tagging from CAM seeds, cached in HDF5, with tag accuracy vs GT.

Per image: K patches (rows [y0, x0, y1, x1, tag] in image pixels, int32) with attributes
`global_tag`, `patch_size`, `orig_size`. Patch centres are drawn from a per-image RNG seeded by
(seed, image position), so the artifact is deterministic. The accuracy JSON reports the
configured rule and, for comparison on the same patches, the other background rule.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from pipeline.config import require
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_summary
from pipeline.io.h5store import ArtifactReader, ArtifactWriter
from pipeline.stage import gpu_stage_parser, open_indexed, parse, split_ids
from pipeline.tagging import (
    BG_RULES,
    UNCERTAIN,
    TagParams,
    global_tag,
    local_tag,
    roi_map,
    tag_correct,
    tag_image,
)

log = logging.getLogger("pipeline.tag_patches")


class _Accuracy:
    def __init__(self) -> None:
        self.n = {"class": 0, "background": 0, "uncertain": 0}
        self.ok = {"class": 0, "background": 0}

    def add(self, gt_patch: np.ndarray, tag: int) -> None:
        kind = "uncertain" if tag == UNCERTAIN else "background" if tag == 0 else "class"
        self.n[kind] += 1
        correct = tag_correct(gt_patch, tag)
        if correct is not None:
            self.ok[kind] += int(correct)

    def result(self) -> dict:
        def rate(k: str) -> float | None:
            return self.ok[k] / self.n[k] if self.n[k] else None

        scored = self.n["class"] + self.n["background"]
        total = scored + self.n["uncertain"]
        return {
            "class_tag_accuracy": rate("class"),
            "background_tag_accuracy": rate("background"),
            "tag_accuracy": (self.ok["class"] + self.ok["background"]) / scored if scored else None,
            "counts": dict(self.n),
            "uncertain_fraction": self.n["uncertain"] / total if total else None,
        }


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--cams", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    args, cfg = parse(p, argv)
    tcfg = require(cfg, "tagging")
    if tcfg["bg_rule"] not in BG_RULES:
        raise PipelineError(f"config key tagging.bg_rule: {tcfg['bg_rule']!r} not in {BG_RULES}")
    params = TagParams(high=tcfg["high"], low=tcfg["low"], num_patches=tcfg["num_patches"],
                       patch_size=tcfg["patch_size"], bg_ratio=tcfg["bg_ratio"], bg_rule=tcfg["bg_rule"])
    other = replace(params, bg_rule=[r for r in BG_RULES if r != params.bg_rule][0])
    ds, index = open_indexed(cfg, args.index)
    cams = ArtifactReader(args.cams, expect="scores")
    ids = split_ids(index, "train")
    acc, acc_other, acc_chance = _Accuracy(), _Accuracy(), _Accuracy()
    seed = int(cfg.get("seed", 0))
    with ArtifactWriter(args.out, "tags", ds.class_names, {"tagging": tcfg, "seed": seed}) as w:
        for pos, image_id in enumerate(ids):
            scores, classes = cams.scores(image_id)
            rng = np.random.default_rng([seed, pos])
            gtag, rows = tag_image(scores, classes, params, rng)
            w.write_array(image_id, rows, global_tag=gtag, patch_size=params.patch_size,
                          orig_size=np.asarray(scores.shape[1:], np.int64), bg_rule=params.bg_rule)
            gt = ds.mask(image_id)
            if gt is None:
                continue
            raw = roi_map(scores, classes, params.high, params.low)
            roi = global_tag(raw)[1]
            for y0, x0, y1, x1, tag in rows:
                acc.add(gt[y0:y1, x0:x1], int(tag))
                acc_other.add(gt[y0:y1, x0:x1], local_tag(roi[y0:y1, x0:x1], other, raw[y0:y1, x0:x1]))
            # Chance reference: the same procedure on uniform random scores for the same classes.
            noise = rng.random(scores.shape, dtype=np.float32)
            if len(noise):
                noise /= noise.reshape(len(noise), -1).max(1)[:, None, None]
            for y0, x0, y1, x1, tag in tag_image(noise, classes, params, rng)[1]:
                acc_chance.add(gt[y0:y1, x0:x1], int(tag))
    result = {"bg_rule": params.bg_rule, **acc.result(), "num_images": len(ids),
              "patch_size": params.patch_size, "other_rule": {"bg_rule": other.bg_rule, **acc_other.result()},
              "chance": acc_chance.result()}
    write_summary(args.metrics, result)
    log.info("tag accuracy (%s rule): %s; %s rule on the same patches: %s", params.bg_rule,
             acc.result(), other.bg_rule, acc_other.result())


if __name__ == "__main__":
    main()
