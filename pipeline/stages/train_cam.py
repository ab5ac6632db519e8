"""Stage: train IRN's CAM classifier (the baseline, and the source of CAM seeds).

The recipe is `pipeline.irn.train`; the loop, resume and final save are the training skeleton's
(`pipeline.runtime.train`). Writes results/cam/baseline/model_final.pth.
"""

from __future__ import annotations

from pipeline.errors import cli_entry
from pipeline.irn.train import build
from pipeline.runtime.train import train_main


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("train_cam", build, argv, __doc__)


if __name__ == "__main__":
    main()
