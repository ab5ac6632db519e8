"""Stage: train IRN's inter-pixel relation network (boundary + displacement branches) of one CAM method.

The recipe is `pipeline.irn.irn_train`; the loop, resume and final save are the training
skeleton's (`pipeline.runtime.train`). Reads the method's IR labels (results/masks/<m>/crf.h5,
IRN's cam_to_ir_label) and, with `irn.backbone_from: cam_model`, its CAM classifier; writes
results/irn/<m>/model_final.pth.
"""

from __future__ import annotations

from pipeline.errors import PipelineError, cli_entry
from pipeline.irn.irn_train import build
from pipeline.runtime.train import train_main

INPUTS = {
    "ir_labels": "IR labels: the method's CRF pseudo masks (crf.h5, IRN's cam_to_ir_label)",
    "cam_model": "the method's CAM classifier (model_final.pth), read when irn.backbone_from is cam_model",
}


def _check(cfg: dict, files: dict, world: int) -> None:
    if not files["ir_labels"]:
        raise PipelineError("train_irn: --ir-labels is required")
    if cfg.get("irn", {}).get("backbone_from") == "cam_model" and not files["cam_model"]:
        raise PipelineError("train_irn: irn.backbone_from is cam_model, so --cam-model is required")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("train_irn", build, argv, __doc__, INPUTS, _check)


if __name__ == "__main__":
    main()
