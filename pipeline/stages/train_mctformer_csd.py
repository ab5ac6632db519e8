"""Stage: train MCTformer-V2 with CSD (cross-domain semantic decoupling), round 2, as PSD_WSSS.

The method is `pipeline.csd.mctformer` (CSD's copy-paste and losses from `pipeline.csd` through
the MCTformer adapter); the loop, resume and final save are the training skeleton's
(`pipeline.runtime.train`). Writes results/cam/mctformer_csd/model_final.pth (train_mctformer's
layout, so make_cam_mctformer writes its maps).
"""

from __future__ import annotations

from pipeline.csd.mctformer import build
from pipeline.errors import PipelineError, cli_entry
from pipeline.runtime.train import train_main

INPUTS = {"source_masks": "round-1 masks: mctformer's CRF masks (mctformer_csd.source_masks: crf_masks) or its cams.h5"}


def _check(cfg: dict, files: dict, world: int) -> None:
    if not files["source_masks"]:
        raise PipelineError("train_mctformer_csd: --source-masks is required")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("train_mctformer_csd", build, argv, __doc__, INPUTS, _check)


if __name__ == "__main__":
    main()
