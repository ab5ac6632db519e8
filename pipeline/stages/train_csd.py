"""Stage: train IRN's CAM classifier with CSD (cross-domain semantic decoupling), round 2.

The method is `pipeline.csd.train`; the loop, resume and final save are the training skeleton's
(`pipeline.runtime.train`). Writes results/cam/csd/model_final.pth (train_cam's layout).
"""

from __future__ import annotations

from pipeline.csd.train import build
from pipeline.errors import PipelineError, cli_entry
from pipeline.runtime.train import train_main

INPUTS = {"source_masks": "round-1 masks: the baseline's cams.h5 (csd.source_masks: cam_seeds) or its CRF masks"}


def _check(cfg: dict, files: dict, world: int) -> None:
    if not files["source_masks"]:
        raise PipelineError("train_csd: --source-masks is required")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("train_csd", build, argv, __doc__, INPUTS, _check)


if __name__ == "__main__":
    main()
