"""SeCo training as a method for the training skeleton (`scripts/train_voc.py`, `scripts/train_coco.py`).

Every iteration: multi-scale CAMs of the batch (no gradient) -> ROI mask -> patch positions and
tags ("separate": online from the model's own CAMs, or offline from tag_patches) -> one forward
of the student (training crop, second global view, K local crops) and of the EMA L-teacher
(the same K positions in the strong view), which updates the prototypes and the key queue ->

    loss = cls + cls_aux + w_ptc PTC + w_lig LIG + w_lil LIL + w_seg SEG + w_reg REG

with the terms switched on by the staged schedule (official VOC: PTC from the start, LIL/LIG
after 1000 iterations, SEG/REG after 2000). Terms that are off are not computed; their
parameters get zero gradients, exactly as the official `0.0 * loss` does (AdamW still decays
them). AdamW with poly warm-up (PolyWarmupAdamW): lr * (1 - (1 - t/W)(1 - r)) during warm-up,
then lr * (1 - t/T)^power; heads, projection head and decoder at 10x.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import unwrap, wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan
from pipeline.seco.data import SeCoTrainDataset
from pipeline.seco.losses import (
    DenseEnergyLoss,
    affinity_labels,
    balanced_seg_loss,
    lig_loss,
    lil_loss,
    multilabel_cls_loss,
    ptc_loss,
)
from pipeline.seco.network import SeCoNet, build_seco_net
from pipeline.seco.par import PAR
from pipeline.seco.pseudo import (
    cam_to_label,
    denormalize01,
    denormalize255,
    multi_scale_cams,
    refine_with_background,
    roi_mask,
)
from pipeline.seco.tagging import assign_tags, crops_from_boxes, cut_crops


def check_world(seco: dict, world: int) -> None:
    """The key queue takes whole steps of keys: what the schema cannot check (it needs the GPU count)."""
    keys_per_step = seco["batch_size"] * (seco["num_local_crops"] + 2) * world
    if seco["queue_size"] % keys_per_step:
        raise PipelineError(f"config key seco.queue_size: {seco['queue_size']} is not a multiple of the "
                            f"{keys_per_step} keys per step (batch_size x (num_local_crops + 2) x GPUs)")


def poly_warmup(it: int, warmup: int, ratio: float, max_iters: int, power: float) -> float:
    """PolyWarmupAdamW's lr multiplier at step `it` (0-based)."""
    if it < warmup:
        return 1 - (1 - it / warmup) * (1 - ratio)
    return max(0.0, 1 - it / max_iters) ** power


def build_optimizer(net: SeCoNet, seco: dict) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    backbone, norms, heads, decoder = net.param_groups()
    lr, mult, wd = seco["lr"], seco["head_lr_mult"], seco["weight_decay"]
    groups = [{"params": backbone, "lr": lr}, {"params": norms, "lr": lr},
              {"params": heads, "lr": lr * mult}, {"params": decoder, "lr": lr * mult}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(seco["betas"]), eps=1e-8, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: poly_warmup(
        it, seco["warmup_iters"], seco["warmup_ratio"], seco["iterations"], seco["poly_power"]))
    return opt, sched


def active_terms(seco: dict, it: int) -> dict[str, bool]:
    """Which parts of the staged schedule run at iteration `it` (the official `n_iter <= k` tests)."""
    s, w = seco["schedule"], seco["weights"]
    return {
        "ptc": it > s["ptc_after"] and w["ptc"] > 0,
        "contrast": it > s["contrast_after"] and (w["lil"] > 0 or w["lig"] > 0),
        "seg": it > s["seg_after"] and w["seg"] > 0,
        "reg": it > s["seg_after"] and w["reg"] > 0,
        "prototypes": it >= s["prototypes_from"],
        "roi_final_cam": it >= s["roi_final_cam_from"],
        "seg_final_cam": it >= s["seg_final_cam_from"],
    }


def grid_boxes(boxes: torch.Tensor, crop: int, grid: tuple[int, int], mode: str) -> torch.Tensor:
    """Crop-pixel boxes for a token-grid label map: unchanged (official PTC quirk) or scaled."""
    if mode == "official":
        return boxes
    gh, gw = grid
    b = boxes.float()
    return torch.stack([(b[:, 0] * gh / crop).floor(), (b[:, 1] * gw / crop).floor(),
                        (b[:, 2] * gh / crop).ceil(), (b[:, 3] * gw / crop).ceil()], dim=1).long()


class SeCoStep:
    """One training iteration (kept in a class so the pieces stay small and testable)."""

    def __init__(self, model, seco: dict, device: torch.device, amp: str, opt, sched, data) -> None:
        self.model, self.seco, self.device, self.amp = model, seco, device, amp
        self.opt, self.sched, self.data = opt, sched, data
        self.net: SeCoNet = unwrap(model)
        self.par = PAR(seco["par"]["dilations"], seco["par"]["num_iter"]).to(device)
        r = seco["reg"]
        self.energy = DenseEnergyLoss(r["kernel_weight"], r["sigma_rgb"], r["sigma_xy"], r["scale_factor"], r["max_side"])
        q = seco["quirks"]
        self.empty_tag = 1 if q["empty_global_tag"] == "official" else -1
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]

    def tags_and_crops(self, batch: dict, x: torch.Tensor, s_view: torch.Tensor, roi: torch.Tensor):
        seco, k, lcs = self.seco, self.seco["num_local_crops"], self.seco["local_crop_size"]
        if seco["tagging"] == "offline":
            boxes = batch["patch_boxes"]
            g = batch["global_tag"][:, None]
            tags = torch.cat([g, g, batch["patch_tags"]], dim=1)
            return crops_from_boxes(x, boxes, lcs), crops_from_boxes(s_view, boxes, lcs), tags
        gen = None
        if seco["quirks"]["crop_positions"] == "random":
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        pos, tags = assign_tags(roi, k, lcs, seco["tag_threshold"], seco["quirks"]["tag_bg_rule"],
                                self.empty_tag, gen)
        return cut_crops(x, pos, lcs), cut_crops(s_view, pos, lcs), tags

    def __call__(self, it: int) -> dict[str, float]:
        seco, dev = self.seco, self.device
        batch = next(self.data)
        x = batch["image"].to(dev)
        labels = batch["label"].to(dev)
        boxes = batch["box"]
        on = active_terms(seco, it)
        with autocast(dev, self.amp):
            cams, cams_aux = multi_scale_cams(self.net, x, seco["cam_scales"])
        roi = roi_mask(cams if on["roi_final_cam"] else cams_aux, labels, seco["high"], seco["low"], boxes)
        crops_q, crops_k, tags = self.tags_and_crops(batch, x, batch["s_image"].to(dev), roi)
        tags = tags.to(dev)
        with autocast(dev, self.amp):
            out = self.model(x, batch["w_image"].to(dev), crops_q, crops_k, tags, batch["label_idx"].to(dev),
                             update_prototypes=on["prototypes"], with_contrast=on["contrast"])
        w = seco["weights"]
        terms = {"cls": multilabel_cls_loss(out["logits"].float(), labels),
                 "cls_aux": multilabel_cls_loss(out["aux_logits"].float(), labels)}
        loss = terms["cls"] + terms["cls_aux"]
        if on["ptc"]:
            tokens = out["tokens"].float()
            grid = tuple(tokens.shape[-2:])
            small = F.interpolate(cams_aux, size=grid, mode="bilinear", align_corners=False)
            _, token_labels = cam_to_label(small, labels, seco["high"], seco["low"],
                                           grid_boxes(boxes, x.shape[-1], grid, seco["quirks"]["ptc_box"]))
            terms["ptc"] = ptc_loss(tokens, affinity_labels(token_labels))
            loss = loss + w["ptc"] * terms["ptc"]
        if on["contrast"]:
            q = out["out_q"].float()
            terms["lil"], revised = lil_loss(q, out["keys"], tags.reshape(-1), out["key_tags"], seco["temp_lil"],
                                             seco["temp_lil"], seco["quirks"]["contrast_form"])
            terms["lig"] = lig_loss(q, out["prototypes"].float(), revised, seco["temp_lig"], seco["temp_lig"],
                                    seco["quirks"]["contrast_form"])
            loss = loss + w["lil"] * terms["lil"] + w["lig"] * terms["lig"]
        if on["seg"] or on["reg"]:
            valid_cam = (cams if on["seg_final_cam"] else cams_aux) * labels[:, :, None, None]
            pseudo = refine_with_background(self.par, denormalize01(x), valid_cam, labels, seco["high"],
                                            seco["low"], boxes)
            segs = F.interpolate(out["seg"].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
            if on["seg"]:
                terms["seg"] = balanced_seg_loss(segs, pseudo)
                loss = loss + w["seg"] * terms["seg"]
            if on["reg"]:
                valid = torch.zeros_like(pseudo, dtype=torch.float32)
                for i, (y0, x0, y1, x1) in enumerate(boxes.tolist()):
                    valid[i, y0:y1, x0:x1] = 1
                terms["reg"] = self.energy(denormalize255(x), segs.softmax(dim=1), valid, pseudo)
                loss = loss + w["reg"] * terms["reg"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.trainable:  # the official's `0.0 * term` gives zero, not missing, gradients
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.opt.step()
        self.sched.step()
        if not math.isfinite(loss.item()):
            raise PipelineError(f"train_seco: loss is {loss.item()} at iteration {it}")
        logs = {k: v.item() for k, v in terms.items()}
        logs.update(loss=loss.item(), uncertain_tags=float((tags == -1).float().mean()))
        return logs


def build(ctx: TrainContext) -> TrainPlan:
    seco, device = ctx.cfg["seco"], ctx.device
    check_world(seco, ctx.world)
    tags_path = ctx.inputs.get("tags")
    if seco["tagging"] == "offline" and not tags_path:
        raise PipelineError("config key seco.tagging: offline needs --tags (results/tags/baseline/tags.h5)")
    net = build_seco_net(seco, ctx.ds.num_classes, seco.get("pretrained")).to(device)
    opt, sched = build_optimizer(net, seco)
    model = wrap_ddp(net, device, find_unused_parameters=True, broadcast_buffers=False)
    dataset = SeCoTrainDataset(ctx.ds, ctx.ids, ctx.labels, seco["crop_size"], seco["rescale"],
                               seco["quirks"]["strong_view_flip"],
                               tags_path if seco["tagging"] == "offline" else None, seco["num_local_crops"])
    data = ResumableLoader(dataset, seco["batch_size"], seed=ctx.seed, num_workers=seco["num_workers"])
    step = SeCoStep(model, seco, device, ctx.amp, opt, sched, data)
    return TrainPlan(model, opt, sched, data, step, seco["iterations"], seco["ckpt_every"],
                     weights=lambda: unwrap(model).state_dict(), meta={"seco": seco, "world_size": ctx.world})
