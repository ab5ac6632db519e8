"""Stage: train DeepLab on a method's refined pseudo masks, or on GT masks (method `gt`, the ceiling).

The method is `pipeline.deeplab.train`; the loop, resume and final save are the training
skeleton's (`pipeline.runtime.train`).
"""

from __future__ import annotations

from pipeline.deeplab.data import GT_METHOD
from pipeline.deeplab.train import build
from pipeline.errors import PipelineError, cli_entry
from pipeline.runtime.train import train_main

INPUTS = {"method": f"the method whose masks to train on; {GT_METHOD!r} = GT ceiling",
          "masks": "refined pseudo masks (crf.h5); not for the GT ceiling"}


def _check(cfg: dict, files: dict, world: int) -> None:
    if not files["method"]:
        raise PipelineError("train_deeplab: --method is required")
    if files["method"] == GT_METHOD and files["masks"]:
        raise PipelineError(f"train_deeplab: the {GT_METHOD!r} ceiling trains on GT masks; drop --masks")
    if files["method"] != GT_METHOD and not files["masks"]:
        raise PipelineError(f"train_deeplab: method {files['method']!r} needs --masks (its pseudo masks)")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("train_deeplab", build, argv, __doc__, INPUTS, _check)


if __name__ == "__main__":
    main()
