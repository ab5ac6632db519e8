"""Stage: qualitative rows for the report, one PNG per method.

For a fixed, seeded subset of evaluation (training) images (`report.qualitative_images`, the
global seed): image | GT | CAM heat map | refined pseudo mask | final DeepLab prediction (after
CRF). The ceiling (`gt`) has no CAM and trains on the GT, which its pseudo-mask column shows.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.cli import open_indexed, parse, require, stage_parser
from pipeline.data.palette import colorize
from pipeline.errors import PipelineError, cli_entry
from pipeline.io.atomic import atomic_path
from pipeline.io.h5store import ArtifactReader
from pipeline.report.draw import blend, image_grid, jet, placeholder
from pipeline.report.subset import qualitative_ids

log = logging.getLogger("pipeline.stages.report_qualitative")

COLUMNS = ("image", "GT", "CAM", "pseudo mask", "prediction")


def cam_heat(image: np.ndarray, cams: ArtifactReader, image_id: str) -> np.ndarray:
    """Max over the image's class CAMs, as a jet overlay on the image."""
    scores, _ = cams.scores(image_id)
    heat = scores.max(0) if len(scores) else np.zeros(image.shape[:2], np.float32)
    return blend(image, jet(heat), 0.5)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = stage_parser(__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--cams", default=None, help="the method's CAM scores (none for the GT ceiling)")
    p.add_argument("--masks", default=None, help="the method's refined pseudo masks (none for the GT ceiling)")
    p.add_argument("--pred", required=True, help="CRF-refined DeepLab predictions")
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    ds, index = open_indexed(cfg, args.index)
    ids = qualitative_ids(index, int(require(cfg, "report.qualitative_images")), int(cfg.get("seed", 0)))
    if not ids:
        raise PipelineError("config key report.qualitative_images: must be >= 1 to draw qualitative rows")
    cams = ArtifactReader(args.cams, expect="scores") if args.cams else None
    masks = ArtifactReader(args.masks, expect="mask") if args.masks else None
    pred = ArtifactReader(args.pred, expect="mask")
    rows = []
    for image_id in ids:
        img, gt = ds.image(image_id), ds.mask(image_id)
        shape = img.shape[:2]
        rows.append([
            img,
            colorize(gt) if gt is not None else placeholder(shape, "no GT"),
            cam_heat(img, cams, image_id) if cams is not None else placeholder(shape, "no CAM"),
            colorize(masks.mask(image_id)) if masks is not None else colorize(gt),
            colorize(pred.mask(image_id)),
        ])
    grid = image_grid(rows, COLUMNS, ids, title=f"{args.method}: image | GT | CAM | pseudo mask | final prediction")
    with atomic_path(args.out) as tmp:
        grid.save(tmp, format="PNG")
    log.info("%s: %d qualitative rows -> %s", args.method, len(ids), args.out)


if __name__ == "__main__":
    main()
