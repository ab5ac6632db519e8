"""Stage: validate a dataset and cache its index (ids, sizes, image-level labels) as JSON.

Every image of every configured split is decoded and every mask checked (class range, size
match), so bad input fails here, once, with the offending file named, before any training.
The index is the small label cache that later stages read instead of decoding masks again.
"""

from __future__ import annotations

import json

from pipeline.cli import parse_cfg, require, setup_logging, stage_parser
from pipeline.config_lookup import lookup
from pipeline.data import open_dataset
from pipeline.data.index import build_index
from pipeline.errors import cli_entry
from pipeline.io.atomic import write_text_atomic
from pipeline.io.h5store import code_version, config_hash

BATCH_KEYS = ("cam.batch_size", "seco.batch_size", "deeplab.batch_size")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    log = setup_logging()
    cfg = parse_cfg(args.cfg)
    ds_cfg = require(cfg, "dataset")
    ds = open_dataset(ds_cfg)
    splits = {role: name for role, name in require(cfg, "dataset.splits").items() if name}
    # One batch per training process at least (the batch sizes are per process).
    min_train = {key: value for key in BATCH_KEYS if (value := lookup(cfg, key)) is not None}
    index = build_index(ds, splits, workers=args.workers, min_train=min_train)
    index["config_hash"] = config_hash(ds_cfg)
    index["code_version"] = code_version()
    write_text_atomic(args.out, json.dumps(index, indent=1, sort_keys=True))
    for role, s in index["splits"].items():
        log.info("%s (%s): %d images, %d single-label", role, s["split"], len(s["ids"]), s["single_label"])


if __name__ == "__main__":
    main()
