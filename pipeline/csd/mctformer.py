"""CSD on MCTformer-V2 (PSD_WSSS `engine.train_one_epoch`): the adapter and the training method.

The maps CSD's losses see are MCTformer's own localisation maps at the patch grid, before any
upsampling or normalisation ("raw scale", PSD_WSSS's `img_single_attn` / `img_multi_w_*_atten`):
  fused    F = (class-to-patch attention summed over the last `mctformer_csd.layers` blocks)
               x ReLU(PatchCAM)
  refined  R_c = P @ vec(F_c), P = patch-to-patch attention summed over every block
             (`mctformer_csd.patch_attn_refine`, always on in PSD_WSSS).
  * source prior: R of the source images, network in eval mode, no gradient (`source_prior`);
  * L_bg sees R of the BG-pasted images with the PatchCAM detached (PSD_WSSS's MCTformerV2
    `feature_map = x_patch.detach()`): only the attention learns from the raw-scale BG term;
  * L_fg sees R of the FG-pasted images with the PatchCAM detached too (`fg_patch_cam:
    detached`), or with gradient into it (`trained`, PSD_WSSS's MCTformerV3 variant).
Everything else is train_mctformer's (`pipeline.mctformer.train`): network, initialisation,
AdamW and per-epoch cosine schedule, transform and classification batches (same seed), loss
MLSM(class tokens) + MLSM(PatchCAM); plus lambda_fg * L_fg + lambda_bg * L_bg with the `csd`
section's constants, `mctformer_csd.bg_maps` replacing `csd.bg_maps`. The model file has
train_mctformer's layout, so make_cam_mctformer writes its maps.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.csd.adapter import PastedMaps, csd_step, paste_pairs
from pipeline.csd.masks import RoundOneMasks
from pipeline.errors import PipelineError
from pipeline.mctformer.cams import class_patch_attention, fuse, patch_affinity, refine
from pipeline.mctformer.model import MCTformerV2, MCTOutput, build_mctformer, mctformer_loss
from pipeline.mctformer.train import build_optimizer, iterations, train_dataset
from pipeline.runtime.distributed import wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan

FG_PATCH_CAM = ("detached", "trained")


class MCTformerMaps(nn.Module):
    """The CSD adapter of an MCTformerV2 (see `pipeline.csd.adapter`): the classification batch
    without attention, each pasted batch with it, all in one module call."""

    def __init__(self, net: MCTformerV2, layers: int, patch_attn_refine: bool = True,
                 fg_patch_cam: str = "detached") -> None:
        super().__init__()
        if fg_patch_cam not in FG_PATCH_CAM:
            raise ValueError(f"unknown fg_patch_cam {fg_patch_cam!r}")
        self.net, self.layers, self.patch_attn_refine, self.fg_patch_cam = net, layers, patch_attn_refine, fg_patch_cam

    def maps(self, out: MCTOutput, detach_patch_cam: bool = True) -> torch.Tensor:
        """B x C x h x w raw (un-normalised) fused maps of one forward with attention, refined
        by the patch affinity when `patch_attn_refine`."""
        c = self.net.num_classes
        patch_cam = out.patch_cam.detach() if detach_patch_cam else out.patch_cam
        fused = fuse(class_patch_attention(out.attn, c, self.layers, tuple(out.patch_cam.shape[-2:])), patch_cam)
        return refine(fused, patch_affinity(out.attn, c)) if self.patch_attn_refine else fused

    def forward(self, x: torch.Tensor, *pasted: torch.Tensor) -> tuple[MCTOutput, list[PastedMaps]]:
        out = self.net(x)
        maps = []
        for batch in pasted:
            o = self.net(batch, with_attn=True)
            bg = self.maps(o, detach_patch_cam=True)
            fg = bg if self.fg_patch_cam == "detached" else self.maps(o, detach_patch_cam=False)
            maps.append(PastedMaps(o, fg, bg))
        return out, maps

    def classification_loss(self, out: MCTOutput, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return mctformer_loss(out, labels)

    def source_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(self.net(x, with_attn=True))


def effective_csd(cfg: dict) -> dict:
    """The `csd` constants with the per-model choices of `mctformer_csd`: its `bg_maps`, and its
    `paste_batch` where set (PSD_WSSS: one pair per classification sample)."""
    mcsd = cfg["mctformer_csd"]
    over = {"bg_maps": mcsd["bg_maps"]}
    if mcsd.get("paste_batch"):
        over["paste_batch"] = mcsd["paste_batch"]
    return {**cfg["csd"], **over}


def round_one_thresholds(cfg: dict) -> tuple[float, float]:
    """MCTformer's own dual thresholds (`masks.methods.mctformer`), for `source_masks: cam_seeds`."""
    recipe = cfg["masks"]["methods"]["mctformer"]
    return recipe.get("fg_threshold", 0.5), recipe.get("bg_threshold", 0.15)


def build(ctx: TrainContext) -> TrainPlan:
    cfg, device, amp = ctx.cfg, ctx.device, ctx.amp
    mct, mcsd, csd = cfg["mctformer"], cfg["mctformer_csd"], effective_csd(cfg)
    masks = RoundOneMasks(ctx.inputs["source_masks"], mcsd["source_masks"], *round_one_thresholds(cfg),
                          key="mctformer_csd.source_masks")
    net = build_mctformer(mct, ctx.ds.num_classes, mct.get("pretrained")).to(device)
    if mct["crop_size"] % net.patch_size:
        raise PipelineError(f"config key mctformer.crop_size: {mct['crop_size']} is not a multiple of the patch size "
                            f"{net.patch_size} (CSD's losses work on whole patches)")
    per_epoch, max_iters = iterations(len(ctx.ids), mct, ctx.world)
    start_iter = csd["start_epoch"] * per_epoch
    opt, sched = build_optimizer(net, mct, ctx.world, per_epoch)
    adapter = MCTformerMaps(net, mcsd["layers"], mcsd["patch_attn_refine"], mcsd["fg_patch_cam"])
    model = wrap_ddp(adapter, device)
    data = ResumableLoader(train_dataset(ctx), mct["batch_size"], seed=ctx.seed, num_workers=mct["num_workers"])
    pairs = paste_pairs(ctx, masks, csd, mct["crop_size"], mct["resize_long"], mct["num_workers"],
                        mcsd["paste_short_side"])

    step = csd_step(model, adapter, data, pairs, start_iter, csd, opt, sched, device, amp)
    return TrainPlan(model, opt, sched, data, step, max_iters, mct["ckpt_every"], weights=net.state_dict,
                     meta={"mctformer": mct, "csd": csd, "mctformer_csd": mcsd}, extra={"pairs": pairs})
