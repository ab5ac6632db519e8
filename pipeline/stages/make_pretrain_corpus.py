"""Stage: generate the pretraining corpus (the ImageNet stand-in, pipeline.data.pretrain_corpus), atomically.

Writes <cache>/corpus-<key>/ in ImageNet's layout with manifest.json (classes, their usual
contexts, the context rates measured on the written images).
"""

from __future__ import annotations

from pipeline.cli import parse_cfg, require, setup_logging, stage_parser
from pipeline.data.pretrain_corpus import CorpusSpec, generate
from pipeline.errors import cli_entry
from pipeline.io.atomic import replace_dir


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--out", required=True, help="corpus folder to create")
    args = p.parse_args(argv)
    log = setup_logging()
    spec = CorpusSpec.from_config(require(parse_cfg(args.cfg), "pretrain.corpus"))
    manifest = replace_dir(args.out, lambda tmp: generate(spec, tmp))
    for split, s in manifest["splits"].items():
        rates = s["context_rates"]
        log.info("%s: %d images of %d classes; P(usual context | class) pooled %.3f; stray context %.3f", split,
                 s["num_images"], manifest["num_classes"], rates["p_context_pooled"] or 0.0,
                 rates["p_stray_context"] or 0.0)


if __name__ == "__main__":
    main()
