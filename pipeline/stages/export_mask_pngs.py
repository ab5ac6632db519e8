"""Stage: a method's CRF-refined pseudo masks as VOC palette PNGs (what IRN and ToCo users load).

`results/masks/<method>/crf_png/<id>.png`: "P" mode, class indices 0..C-1, 255 = uncertain (the
band between the dual thresholds, ignored by DeepLab) or void. Switch: `masks.png`.
"""

from __future__ import annotations

import logging

from pipeline.cli import parse, stage_parser
from pipeline.data.palette import write_mask_folder
from pipeline.errors import cli_entry
from pipeline.io.h5store import ArtifactReader

log = logging.getLogger("pipeline.stages.export_mask_pngs")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--masks", required=True, help="results/masks/<method>/crf.h5")
    p.add_argument("--out", required=True, help="the PNG folder (rule output)")
    args, _ = parse(p, argv)
    n = write_mask_folder(ArtifactReader(args.masks, expect="mask"), args.out)
    log.info("wrote %d palette PNGs to %s", n, args.out)


if __name__ == "__main__":
    main()
