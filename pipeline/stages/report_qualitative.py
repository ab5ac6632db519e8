"""Stage: qualitative rows for the report, one PNG per method.

Three blocks, with the class-colour legend below them:
- a fixed, seeded subset of evaluation (training) images (`report.qualitative_images`, the global
  seed): image | GT | CAM heat map | refined pseudo mask | final DeepLab prediction (after CRF);
- as many seeded val images: image | GT | final prediction;
- the method's worst val images by per-image mIoU of the final prediction (classes present in the
  image's GT or prediction), worst first, the IoU in the row title.
Masks are drawn over their image (background shows the image). The ceiling (`gt`) has no CAM and
trains on the GT, which its pseudo-mask column shows.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from pipeline.cli import open_indexed, parse, require, stage_parser
from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.palette import VOC_COLORMAP, colorize
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import ConfusionMatrix, scores
from pipeline.io.atomic import atomic_path
from pipeline.io.h5store import ArtifactReader
from pipeline.io.progress import progress
from pipeline.report.draw import blend, image_grid, jet, legend, overlay, placeholder, stack
from pipeline.report.subset import qualitative_ids, val_ids, worst_ids

log = logging.getLogger("pipeline.stages.report_qualitative")

TRAIN_COLUMNS = ("image", "GT", "CAM", "pseudo mask", "prediction")
VAL_COLUMNS = ("image", "GT", "prediction")


def cam_heat(image: np.ndarray, cams: ArtifactReader, image_id: str) -> np.ndarray:
    """Max over the image's class CAMs, as a jet overlay on the image."""
    scores_, _ = cams.scores(image_id)
    heat = scores_.max(0) if len(scores_) else np.zeros(image.shape[:2], np.float32)
    return blend(image, jet(heat), 0.5)


def mask_over(image: np.ndarray, mask: np.ndarray | None, missing: str = "no GT") -> np.ndarray:
    if mask is None:
        return placeholder(image.shape[:2], missing)
    return overlay(image, colorize(mask), mask)


def image_miou(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    cm = ConfusionMatrix(num_classes)
    cm.update(gt, pred)
    # "all": over the classes in the image's GT or prediction, so a hallucinated class counts 0
    return float(scores(cm, "all")["miou"])


def class_legend(class_names: list[str]) -> Image.Image:
    return legend(class_names, VOC_COLORMAP, extra=[("uncertain / ignored", tuple(int(v) for v in VOC_COLORMAP[IGNORE_INDEX]))])


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
    count, seed = int(require(cfg, "report.qualitative_images")), int(cfg.get("seed", 0))
    ids = qualitative_ids(index, count, seed)
    if not ids:
        raise PipelineError("config key report.qualitative_images: must be >= 1 to draw qualitative rows")
    cams = ArtifactReader(args.cams, expect="scores") if args.cams else None
    masks = ArtifactReader(args.masks, expect="mask") if args.masks else None
    pred = ArtifactReader(args.pred, expect="mask")
    rows = []
    for image_id in ids:
        img, gt = ds.image(image_id), ds.mask(image_id)
        rows.append([
            img,
            mask_over(img, gt),
            cam_heat(img, cams, image_id) if cams is not None else placeholder(img.shape[:2], "no CAM"),
            mask_over(img, masks.mask(image_id) if masks is not None else gt),
            mask_over(img, pred.mask(image_id)),
        ])
    blocks = [image_grid(rows, TRAIN_COLUMNS, ids, title=f"{args.method}: training images")]
    val = [i for i in sorted(index["splits"].get("val", {}).get("ids", [])) if i in pred]
    if val:
        per_image = {}
        for image_id in progress(val, f"report_qualitative {args.method}: per-image IoU"):
            gt = ds.mask(image_id)
            if gt is not None:
                per_image[image_id] = image_miou(gt, pred.mask(image_id), ds.num_classes)
        for title, picked in ((f"{args.method}: val images", [(i, per_image.get(i)) for i in val_ids(index, count, seed)]),
                              (f"{args.method}: worst val images by IoU", worst_ids(per_image, count))):
            if not picked:
                continue
            val_rows, names = [], []
            for image_id, iou in picked:
                img = ds.image(image_id)
                val_rows.append([img, mask_over(img, ds.mask(image_id)), mask_over(img, pred.mask(image_id))])
                names.append(image_id if iou is None else f"{image_id}\nIoU {iou:.2f}")
            blocks.append(image_grid(val_rows, VAL_COLUMNS, names, title=title))
    blocks.append(class_legend(list(ds.class_names)))
    with atomic_path(args.out) as tmp:
        stack(blocks).save(tmp, format="PNG")
    log.info("%s: %d training rows, %d val images scored -> %s", args.method, len(ids), len(val), args.out)


if __name__ == "__main__":
    main()
