"""Stage: join the shard files of one scattered artifact (Snakemake's gather) into one file.

Shards must share the artifact kind and class list and hold disjoint image ids
(`pipeline.io.h5store.merge_shards`); the joined file is written atomically.
"""

from __future__ import annotations

import logging

from pipeline.cli import parse_cfg, setup_logging, stage_parser
from pipeline.errors import cli_entry
from pipeline.io.h5store import ArtifactReader, merge_shards

log = logging.getLogger("pipeline.stages.gather_shards")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    setup_logging()
    parse_cfg(args.cfg)  # validates the JSON; merging depends on no config key
    merge_shards(args.shards, args.out)
    log.info("joined %d shards into %s (%d images)", len(args.shards), args.out, len(ArtifactReader(args.out)))


if __name__ == "__main__":
    main()
