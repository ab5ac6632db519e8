"""Stage: supervised pretraining of one backbone family on the pretraining corpus (the ImageNet stand-in).

The recipe is `pipeline.pretrain.train`; the loop, lease, DDP, resume, bf16 and metrics CSV are
the training skeleton's (`pipeline.runtime.train`). Writes <cache>/<backbone>-<key>/model.safetensors
(a plain timm state dict, loaded by `pretrained: <file>`) and eval.json (held-out accuracy).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError, cli_entry
from pipeline.pretrain.train import build
from pipeline.runtime.train import train_main

INPUTS = {"corpus": "the pretraining corpus folder (make_pretrain_corpus)",
          "eval": "held-out accuracy JSON to write beside the weights"}


def _check(cfg: dict, files: dict, world: int) -> None:
    if not files["corpus"] or not (Path(files["corpus"]) / "manifest.json").is_file():
        raise PipelineError(f"pretrain: --corpus {files['corpus']}: no manifest.json (run make_pretrain_corpus)")
    if "pretrain" not in cfg or "backbone" not in cfg["pretrain"]:
        raise PipelineError("config key pretrain.backbone: missing (the rule passes one job's spec)")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_main("pretrain", build, argv, __doc__, INPUTS, _check, indexed=False)


if __name__ == "__main__":
    main()
