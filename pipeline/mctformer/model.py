"""MCTformer-V2 (xulianuwa/MCTformer, models.py `MCTformerV2`) on a timm ViT.

One class token per foreground class (C of them) replaces the ViT's single class token; the
positional embedding covers the C class tokens and the patch grid. Outputs, as in the official
model:
  * class-token logits: the mean over channels of each output class token (no final LayerNorm:
    the official `forward_features` returns the last block's output as it is);
  * PatchCAM: the patch tokens as an h x w map through a 3x3 conv (D -> C, padding 1); its
    global average gives the patch logits;
  * per block, the attention averaged over heads (T x T with T = C + h*w), from which the
    localisation maps are built (`pipeline.mctformer.cams`).

The timm ViT supplies patch embedding and blocks (created through `pipeline.backbones`); its own
class token, final norm and head are dropped. From ImageNet weights, the single class token and
its positional embedding are copied to every class token (the official `main.py --finetune`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.backbones import create_backbone


class MCTOutput(NamedTuple):
    cls_logits: torch.Tensor      # B x C: mean over channels of each output class token
    patch_logits: torch.Tensor    # B x C: GAP of the PatchCAM
    patch_cam: torch.Tensor       # B x C x h x w: the conv head's output (before ReLU)
    attn: torch.Tensor | None     # L x B x T x T attention averaged over heads (T = C + h*w), if asked


def _trunc_normal_(t: torch.Tensor) -> None:
    nn.init.trunc_normal_(t, std=0.02, a=-2.0, b=2.0)  # timm's trunc_normal_(std=.02) bounds


class MCTformerV2(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "deit_small_patch16_224", pretrained: str | bool | None = None,
                 backbone_kwargs: dict | None = None, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        vit = create_backbone(backbone, pretrained, key="mctformer.pretrained", num_classes=0,
                              drop_path_rate=drop_path_rate, **(backbone_kwargs or {}))
        if (getattr(vit, "cls_token", None) is None or getattr(vit, "no_embed_class", False)
                or getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "pos_embed", None) is None):
            raise ValueError(f"{backbone}: MCTformer needs a ViT with one class token whose position is embedded "
                             "(no register tokens)")
        self.num_classes = num_classes
        self.embed_dim = int(vit.embed_dim)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.grid = tuple(int(g) for g in vit.patch_embed.grid_size)
        d = self.embed_dim
        pos = vit.pos_embed.detach()  # 1 x (1 + N) x D
        self.cls_tokens = nn.Parameter(torch.zeros(1, num_classes, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_classes + pos.shape[1] - 1, d))
        if pretrained not in (None, False, "", "none"):
            # official finetune: cls token and its position repeated C times, patch positions kept
            self.cls_tokens.data.copy_(vit.cls_token.detach().expand(1, num_classes, d))
            self.pos_embed.data.copy_(torch.cat([pos[:, :1].expand(1, num_classes, d), pos[:, 1:]], dim=1))
        else:
            _trunc_normal_(self.cls_tokens)
            _trunc_normal_(self.pos_embed)
        # The ViT's own single-token parameters, final norm and head are unused: removing them
        # keeps them out of the optimizer, the checkpoint and DDP's unused-parameter check.
        vit.cls_token = None
        vit.pos_embed = None
        vit.norm = nn.Identity()
        self.vit = vit
        self.head = nn.Conv2d(d, num_classes, kernel_size=3, stride=1, padding=1)  # PyTorch's default init, as official

    def patch_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The patch positions resized bicubically to an h x w grid (the official
        `interpolate_pos_encoding`; the training size needs none)."""
        c = self.num_classes
        grid = self.pos_embed[:, c:].reshape(1, self.grid[0], self.grid[1], -1).permute(0, 3, 1, 2)
        if (h, w) != self.grid:
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def tokens(self, x: torch.Tensor, with_attn: bool) -> tuple[torch.Tensor, tuple[int, int], list[torch.Tensor]]:
        """Last block's tokens (B x T x D, class tokens first), the patch grid, and per block the
        head-averaged attention (when asked)."""
        v = self.vit
        x = v.patch_embed.proj(x)  # a strided conv: an image side that is not a multiple of the patch is floored
        h, w = x.shape[-2:]
        x = v.patch_embed.norm(x.flatten(2).transpose(1, 2)) + self.patch_pos_embed(h, w)
        cls = self.cls_tokens.expand(x.shape[0], -1, -1) + self.pos_embed[:, : self.num_classes]
        x = v.norm_pre(v.pos_drop(torch.cat([cls, x], dim=1)))
        attns = []
        for blk in v.blocks:
            if with_attn:
                x, a = _block_with_attention(blk, x)
                attns.append(a)
            else:
                x = blk(x)
        return x, (int(h), int(w)), attns

    def forward(self, x: torch.Tensor, with_attn: bool = False) -> MCTOutput:
        t, (h, w), attns = self.tokens(x, with_attn)
        c = self.num_classes
        cls_logits = t[:, :c].mean(-1)
        patch_cam = self.head(t[:, c:].transpose(1, 2).reshape(t.shape[0], self.embed_dim, h, w))
        patch_logits = patch_cam.mean((2, 3))
        return MCTOutput(cls_logits, patch_logits, patch_cam, torch.stack(attns) if with_attn else None)

    def no_weight_decay(self) -> set[str]:
        """The official `no_weight_decay` names (timm skips them and every 1-d parameter)."""
        return {"cls_tokens", "pos_embed"}


def _block_with_attention(blk: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's `Block.forward`, with the attention probabilities (averaged over heads) returned:
    the official blocks return them, timm's fused attention does not."""
    attn_mod = blk.attn
    if getattr(attn_mod, "gate", None) is not None:
        raise ValueError("gated attention is not supported")
    y = blk.norm1(x)
    b, n, _ = y.shape
    qkv = attn_mod.qkv(y).reshape(b, n, 3, attn_mod.num_heads, attn_mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attn = ((q * attn_mod.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    # the returned weights are taken before attention dropout, as the official `weights = attn`
    out = (attn_mod.attn_drop(attn) @ v).transpose(1, 2).reshape(b, n, -1)
    out = attn_mod.proj_drop(attn_mod.proj(attn_mod.norm(out)))
    x = x + blk.drop_path1(blk.ls1(out))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, attn.mean(1)


def mctformer_loss(out: MCTOutput, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The official V2 loss: multilabel soft-margin on the class-token logits plus the same on the
    PatchCAM logits, weight 1 each (engine.py `train_one_epoch`)."""
    cls = F.multilabel_soft_margin_loss(out.cls_logits.float(), labels)
    pat = F.multilabel_soft_margin_loss(out.patch_logits.float(), labels)
    return cls + pat, {"cls_loss": cls.item(), "patch_loss": pat.item()}


def build_mctformer(mct: dict, num_classes: int, pretrained: str | bool | None = None) -> MCTformerV2:
    """The network of config section `mctformer` for `num_classes` (background included)."""
    return MCTformerV2(num_classes - 1, mct["backbone"], pretrained, mct.get("backbone_kwargs") or {},
                       mct["drop_path"])
