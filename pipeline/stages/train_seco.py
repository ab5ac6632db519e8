"""Stage: train SeCo end to end (`scripts/train_voc.py`, `scripts/train_coco.py`).

The method is `pipeline.seco.train`; the loop, resume and final save are the training
skeleton's (`pipeline.runtime.train`). Writes results/seco/model_final.pth.
"""

from __future__ import annotations

from pipeline.errors import cli_entry
from pipeline.runtime.train import train_main
from pipeline.seco.train import build, check_world

INPUTS = {"tags": "results/tags/baseline/tags.h5 (seco.tagging: offline)"}


def _check(cfg: dict, files: dict, world: int) -> None:
    check_world(cfg["seco"], world)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("train_seco", build, argv, __doc__, INPUTS, _check)


if __name__ == "__main__":
    main()
