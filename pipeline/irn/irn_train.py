"""IRN's inter-pixel relation network training (step/train_irn.py), as a method for the training
skeleton (`pipeline.runtime.train`).

IRN's recipe: IR labels from cam_to_ir_label (here the method's CRF masks, `results/masks/<m>/crf.h5`:
the same dual thresholds 0.30 / 0.05 and label CRF), images rescaled by [0.5, 1.5], flipped,
cropped to 512 (labels padded with 255) and the labels reduced to the stride-4 grid; pairs
within radius 10; batch 32, 3 epochs, poly lr 0.1 for the boundary branch and 10x for the
displacement branch, weight decay 1e-4. IRN's PolyOptimizer passes weight_decay as SGD's third
positional argument (momentum), so its effective momentum is 1e-4 (`irn.momentum`, as `cam.momentum`).
Loss: (positive + negative affinity) / 2 + (foreground + background displacement) / 2.

Not reproduced: IRN's pass over the inference images after training that estimates the
displacement field's mean (used only by its instance segmentation, out of scope here).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.data.base import SegDataset
from pipeline.data.transforms import hflip, normalize, random_crop, to_chw
from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactReader
from pipeline.irn.affinity import (
    affinity_losses,
    displacement_losses,
    edge_to_affinity,
    pair_displacement,
    pair_labels,
    reduce_label,
)
from pipeline.irn.edge import GRID_STRIDE, EdgeDisplacementNet, create_irn_backbone
from pipeline.irn.pathindex import PathIndex
from pipeline.runtime.checkpoint import load_final
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import unwrap, wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan

BACKBONE_SOURCES = ("cam_model", "pretrained")


def _rescale(img: np.ndarray, label: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """IRN's random_scale: bicubic for the image, nearest for the labels, to round(size x scale)."""
    h, w = label.shape
    size = (max(1, int(np.round(w * scale))), max(1, int(np.round(h * scale))))
    return (np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC)),
            np.asarray(Image.fromarray(label).resize(size, Image.NEAREST)))


class AffinityDataset(Dataset):
    """IRN's VOC12AffinityDataset: an augmented crop and its pair labels on the stride-4 grid.

    Randomness comes from numpy's global RNG, which `ResumableLoader` seeds per draw, so a
    resumed run reproduces the same crops. Pair labels are bool (D x N); the step casts them.
    """

    def __init__(self, ds: SegDataset, ids: list[str], ir_labels: str, crop: int, rescale: tuple[float, float],
                 index: PathIndex) -> None:
        self.ds, self.ids, self.crop, self.rescale, self.index = ds, ids, crop, tuple(rescale), index
        self.labels = ArtifactReader(ir_labels, expect="mask")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(np.random.randint(0, 2**31))
        image_id = self.ids[i]
        img, label = self.ds.image(image_id), self.labels.mask(image_id)
        if label.shape != img.shape[:2]:
            raise PipelineError(f"{self.labels.path}: IR label of {image_id!r} is {label.shape}, the image {img.shape[:2]}")
        img, label = _rescale(img, label, float(rng.uniform(*self.rescale)))
        img = normalize(img)
        if rng.random() < 0.5:
            img, label = hflip(img), hflip(label)
        img, label, _ = random_crop(img, self.crop, rng, mask=label, pad_value=0.0, mask_pad=255)
        bg, fg, neg = pair_labels(reduce_label(label, GRID_STRIDE), self.index, self.ds.num_classes)
        return {"image": torch.from_numpy(to_chw(img)), "bg_pos": torch.from_numpy(bg), "fg_pos": torch.from_numpy(fg),
                "neg": torch.from_numpy(neg), "index": i}


def backbone_spec(cfg: dict) -> dict:
    """{name, output_stride} of the backbone the IRN model is built on (stored in its meta)."""
    irn = cfg["irn"]
    if irn["backbone_from"] == "cam_model":
        return {"name": cfg["cam"]["backbone"], "output_stride": cfg["cam"]["output_stride"]}
    return {"name": irn["backbone"], "output_stride": 16}  # IRN: ResNet-50 strides (2, 2, 2, 1)


def load_backbone(cfg: dict, num_classes: int, cam_model: str | None) -> torch.nn.Module:
    """The frozen backbone: the trained CAM classifier's (`cam_model`) or ImageNet weights (`pretrained`)."""
    irn = cfg["irn"]
    if irn["backbone_from"] not in BACKBONE_SOURCES:
        raise PipelineError(f"config key irn.backbone_from: {irn['backbone_from']!r} is not one of {BACKBONE_SOURCES}")
    if irn["backbone_from"] == "pretrained":
        return create_irn_backbone(backbone_spec(cfg), irn["pretrained"])
    from pipeline.irn.train import build_cam_net  # the CAM classifier's own builder, so its weights load

    if not cam_model:
        raise PipelineError("train_irn: irn.backbone_from is cam_model, so --cam-model is required")
    state, _ = load_final(cam_model)
    net = build_cam_net({**cfg["cam"], "pretrained": None}, num_classes)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise PipelineError(f"{cam_model}: does not match the config's cam.backbone ({exc})") from exc
    return net.backbone


def iterations(num_images: int, irn: dict, world: int) -> int:
    """IRN: max_step = (N // batch) * epochs, with the batch per process times the world size."""
    per_epoch = num_images // (irn["batch_size"] * world)
    if per_epoch < 1:
        raise PipelineError(f"config key irn.batch_size: {irn['batch_size']} x {world} exceeds the {num_images} training images")
    return per_epoch * irn["epochs"]


def build_optimizer(net: EdgeDisplacementNet, irn: dict, max_iters: int):
    """IRN's PolyOptimizer as SGD + poly LambdaLR: boundary branch lr, displacement branch lr x dp_lr_mult."""
    edge, dp = net.param_groups()
    groups = [{"params": edge, "lr": irn["lr"], "weight_decay": irn["weight_decay"]}]
    if dp:
        groups.append({"params": dp, "lr": irn["lr"] * irn["dp_lr_mult"], "weight_decay": irn["weight_decay"]})
    opt = torch.optim.SGD(groups, lr=irn["lr"], momentum=irn["momentum"])
    power = irn["poly_power"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(0.0, 1 - it / max_iters) ** power)
    return opt, sched


def irn_losses(net: torch.nn.Module, index: PathIndex, paths: list[torch.Tensor], directions: torch.Tensor,
               batch: dict, device: torch.device, amp: str = "off") -> dict[str, torch.Tensor]:
    """IRN's four loss terms and their total for one batch (train_irn's weighting)."""
    x = batch["image"].to(device)
    bg, fg, neg = (batch[k].to(device).float() for k in ("bg_pos", "fg_pos", "neg"))
    with autocast(device, amp):
        edge_logits, disp = net(x)
    aff = edge_to_affinity(torch.sigmoid(edge_logits.float()), paths)
    pos_loss, neg_loss = affinity_losses(aff, bg, fg, neg)
    out = {"pos": pos_loss, "neg": neg_loss, "loss": (pos_loss + neg_loss) / 2}
    if disp is not None:
        dp_fg, dp_bg = displacement_losses(pair_displacement(disp.float(), index), directions, bg, fg)
        out.update(dp_fg=dp_fg, dp_bg=dp_bg, loss=out["loss"] + (dp_fg + dp_bg) / 2)
    return out


def build(ctx: TrainContext) -> TrainPlan:
    irn, device = ctx.cfg["irn"], ctx.device
    crop = irn["crop_size"]
    net = EdgeDisplacementNet(load_backbone(ctx.cfg, ctx.ds.num_classes, ctx.inputs.get("cam_model")),
                              displacement=irn["displacement"]).to(device)
    if crop % net.max_stride:
        raise PipelineError(f"config key irn.crop_size: {crop} is not a multiple of the backbone stride {net.max_stride}")
    index = PathIndex(irn["path_radius"], (crop // GRID_STRIDE, crop // GRID_STRIDE))
    paths = [torch.from_numpy(p).to(device) for p in index.path_indices]
    directions = torch.from_numpy(index.directions).to(device)
    max_iters = iterations(len(ctx.ids), irn, ctx.world)
    opt, sched = build_optimizer(net, irn, max_iters)
    model = wrap_ddp(net, device)
    labels = ArtifactReader(ctx.inputs["ir_labels"], expect="mask")
    missing = [i for i in ctx.ids if i not in labels]
    if missing:
        raise PipelineError(f"{labels.path}: no IR label for {len(missing)} training images (first {missing[0]!r})")
    labels.close()
    data = ResumableLoader(AffinityDataset(ctx.ds, ctx.ids, ctx.inputs["ir_labels"], crop, irn["rescale"], index),
                           irn["batch_size"], seed=ctx.seed, num_workers=irn["num_workers"])

    def step(it: int) -> dict[str, float]:
        losses = irn_losses(model, index, paths, directions, next(data), device, ctx.amp)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        sched.step()
        return {k: v.item() for k, v in losses.items()}

    return TrainPlan(model, opt, sched, data, step, max_iters, irn["ckpt_every"],
                     weights=lambda: unwrap(model).state_dict(),
                     meta={"irn": irn, "backbone": backbone_spec(ctx.cfg)})
