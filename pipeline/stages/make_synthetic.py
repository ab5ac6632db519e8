"""Stage: generate the synthetic co-occurrence dataset in VOC layout (atomically)."""

from __future__ import annotations

from pipeline.cli import parse_cfg, setup_logging, stage_parser
from pipeline.data.synthetic import SyntheticSpec, generate
from pipeline.errors import cli_entry
from pipeline.io.atomic import replace_dir


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--out", required=True, help="dataset root to create (VOC2012-style)")
    args = p.parse_args(argv)
    log = setup_logging()
    spec = SyntheticSpec.from_config(parse_cfg(args.cfg).get("synthetic", {}))
    stats = replace_dir(args.out, lambda tmp: generate(spec, tmp))
    for split, s in stats["splits"].items():
        log.info("%s: %d images; P(context|class)=%s; P(partner|class)=%s", split, s["num_images"],
                 s["p_context_given_class"], s["p_partner_given_class"])


if __name__ == "__main__":
    main()
