"""Stage: train MCTformer-V2 (class tokens + PatchCAM) on the image-level labels.

The recipe is `pipeline.mctformer.train`; the loop, resume and final save are the training
skeleton's (`pipeline.runtime.train`). Writes results/cam/mctformer/model_final.pth.
"""

from __future__ import annotations

from pipeline.errors import cli_entry
from pipeline.mctformer.train import build
from pipeline.runtime.train import train_main


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("train_mctformer", build, argv, __doc__)


if __name__ == "__main__":
    main()
