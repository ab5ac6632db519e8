"""Stage: SeCo's patch tagging from the baseline's CAM seeds, cached in HDF5, with tag accuracy vs GT.

The same `assign_tags` as SeCo's online training (`pipeline.seco.tagging`), with SeCo's keys:
thresholds `seco.high` / `seco.low`, `seco.num_local_crops` patches of `seco.offline_patch_size`
image pixels, background share `seco.tag_threshold`, rule `seco.quirks.tag_bg_rule`, positions
`seco.quirks.crop_positions` (fixed_seed: the official reseeding with 0 per image; random: a
generator seeded by (seed, image position)). Per image: K rows [y0, x0, y1, x1, tag] in image
pixels (int32) with attributes `global_tag`, `patch_size`, `orig_size`, `bg_rule`. The accuracy
JSON reports the configured rule and, on the same patches, the other background rule.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pipeline.cli import gpu_stage_parser, open_indexed, parse, require, split_ids
from pipeline.data.labels import UNCERTAIN
from pipeline.errors import cli_entry
from pipeline.eval.metrics import write_summary
from pipeline.io.h5store import ArtifactReader, ArtifactWriter
from pipeline.io.progress import progress
from pipeline.seco.tagging import BG_RULES, roi_map, tag_correct, tag_image

log = logging.getLogger("pipeline.stages.tag_patches")


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


def _generator(mode: str, seed: int, pos: int) -> torch.Generator | None:
    return None if mode == "fixed_seed" else torch.Generator().manual_seed(seed * 1_000_003 + pos)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = gpu_stage_parser(__doc__)
    p.add_argument("--cams", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    args, cfg = parse(p, argv)
    seco = require(cfg, "seco")
    quirks = seco["quirks"]
    rule, size = quirks["tag_bg_rule"], seco["offline_patch_size"]
    other_rule = [r for r in BG_RULES if r != rule][0]
    empty_tag = 1 if quirks["empty_global_tag"] == "official" else UNCERTAIN
    ds, index = open_indexed(cfg, args.index)
    cams = ArtifactReader(args.cams, expect="scores")
    ids = split_ids(index, "train")
    acc, acc_other, acc_chance = _Accuracy(), _Accuracy(), _Accuracy()
    seed = int(cfg.get("seed", 0))

    def tags(roi: np.ndarray, bg_rule: str, pos: int) -> tuple[int, np.ndarray]:
        return tag_image(roi, seco["num_local_crops"], size, seco["tag_threshold"], bg_rule, empty_tag,
                         _generator(quirks["crop_positions"], seed, pos))

    with ArtifactWriter(args.out, "tags", ds.class_names, {"seco": seco, "seed": seed}) as w:
        for pos, image_id in enumerate(progress(ids, "tag_patches")):
            scores, classes = cams.scores(image_id)
            roi = roi_map(scores, classes, seco["high"], seco["low"])
            gtag, rows = tags(roi, rule, pos)
            w.write_array(image_id, rows, global_tag=gtag, patch_size=size,
                          orig_size=np.asarray(scores.shape[1:], np.int64), bg_rule=rule)
            gt = ds.mask(image_id)
            if gt is None:
                continue
            # The same positions (the draw does not depend on the rule), tagged by the other rule.
            other = tags(roi, other_rule, pos)[1]
            for (y0, x0, y1, x1, tag), other_tag in zip(rows, other[:, 4], strict=True):
                acc.add(gt[y0:y1, x0:x1], int(tag))
                acc_other.add(gt[y0:y1, x0:x1], int(other_tag))
            # Chance reference: the same procedure on uniform random scores for the same classes.
            noise = np.random.default_rng([seed, pos]).random(scores.shape, dtype=np.float32)
            if len(noise):
                noise /= noise.reshape(len(noise), -1).max(1)[:, None, None]
            for y0, x0, y1, x1, tag in tags(roi_map(noise, classes, seco["high"], seco["low"]), rule, pos)[1]:
                acc_chance.add(gt[y0:y1, x0:x1], int(tag))
    result = {"bg_rule": rule, **acc.result(), "num_images": len(ids), "patch_size": size,
              "other_rule": {"bg_rule": other_rule, **acc_other.result()}, "chance": acc_chance.result()}
    write_summary(args.metrics, result)
    log.info("tag accuracy (%s rule): %s; %s rule on the same patches: %s", rule, acc.result(), other_rule,
             acc_other.result())


if __name__ == "__main__":
    main()
