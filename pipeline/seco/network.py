"""SeCo's network (`model/model_seco.py`, `model/backbone/vit.py`, `model/proj_head.py`).

    encoder      timm ViT; frozen position embeddings, bicubically interpolated to the input;
                 returns (final CLS, final patch tokens, patch tokens of block `aux_layer`)
    classifier   1x1 conv without bias on the final tokens; logits by global max pooling
    aux head     the same on the aux-layer tokens
    decoder      ASPP: sum of four 3x3 convs with dilations 6/12/18/24 (bias, N(0, 0.01) init)
    proj_head    DINO head MLP D -> hidden -> hidden -> D with GELU, L2-normalised output (the
                 official weight-normed `last_layer` is never used in forward and is omitted)
    L-teacher    encoder_k / proj_head_t: EMA copies (momentum 0.999, updated every forward)
    buffers      prototypes (C-1) x D, the key queue Q x D with its tags, the queue pointer

The G-teacher of the paper is the student encoder itself on the full image: its CLS token
updates the class prototypes.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from pipeline.backbones import create_backbone

QUEUE_INITS = ("official", "empty")


class ViTEncoder(nn.Module):
    def __init__(self, backbone: str, pretrained: str | None = None, aux_layer: int = -3, **kwargs) -> None:
        super().__init__()
        self.vit = create_backbone(backbone, pretrained, key="seco.pretrained", num_classes=0, **kwargs)
        if self.vit.cls_token is None or getattr(self.vit, "no_embed_class", False) or self.vit.num_prefix_tokens != 1:
            raise ValueError(f"{backbone}: SeCo needs a ViT with one class token whose position is embedded")
        self.vit.pos_embed.requires_grad_(False)  # frozen as in the official backbone
        self.embed_dim = int(self.vit.embed_dim)
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.grid = tuple(int(g) for g in self.vit.patch_embed.grid_size)
        depth = len(self.vit.blocks)
        self.aux_index = aux_layer % depth
        if not 0 <= self.aux_index < depth - 1:
            raise ValueError(f"seco.aux_layer {aux_layer} is not an intermediate block of a {depth}-block ViT")

    def pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The class-token embedding followed by the patch grid resized to h x w (bicubic, no
        antialiasing, as the official `prepare_tokens`; timm's resampler antialiases)."""
        pos = self.vit.pos_embed
        grid = pos[:, 1:].reshape(1, self.grid[0], self.grid[1], -1).permute(0, 3, 1, 2)
        if (h, w) != self.grid:
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.vit
        x = v.patch_embed.proj(x)  # a strided conv: sizes that are not multiples of the patch floor
        h, w = x.shape[-2:]
        x = v.patch_embed.norm(x.flatten(2).transpose(1, 2))
        x = torch.cat([v.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed(h, w)
        x = v.norm_pre(v.pos_drop(x))
        aux = x
        for i, blk in enumerate(v.blocks):
            x = blk(x)
            if i == self.aux_index:
                aux = x  # before any norm, as the official `embeds[aux_layer]`
        x = v.norm(x)
        b, _, d = x.shape
        tokens = x[:, 1:].transpose(1, 2).reshape(b, d, h, w)
        aux_tokens = aux[:, 1:].transpose(1, 2).reshape(b, d, h, w)
        return x[:, 0], tokens, aux_tokens


class ASPP(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, rates: tuple[int, ...] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_planes, out_planes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or in_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, out_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)


def _gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenation over DDP ranks (no gradient), `t` itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    for p_t, p_s in zip(teacher.parameters(), student.parameters(), strict=True):
        p_t.mul_(momentum).add_(p_s.detach(), alpha=1.0 - momentum)


class SeCoNet(nn.Module):
    def __init__(self, num_classes: int, backbone: str, pretrained: str | None = None,
                 backbone_kwargs: dict | None = None, aux_layer: int = -3, proj_hidden: int = 2048,
                 queue_size: int = 4608, ema_momentum: float = 0.999, proto_momentum: float = 0.9,
                 queue_init: str = "official") -> None:
        super().__init__()
        if queue_init not in QUEUE_INITS:
            raise ValueError(f"seco.quirks.queue_init: {queue_init!r} not in {QUEUE_INITS}")
        self.num_classes = num_classes
        self.ema_momentum = ema_momentum
        self.proto_momentum = proto_momentum
        self.encoder = ViTEncoder(backbone, pretrained, aux_layer, **(backbone_kwargs or {}))
        dim = self.encoder.embed_dim
        self.classifier = nn.Conv2d(dim, num_classes - 1, 1, bias=False)
        self.aux_classifier = nn.Conv2d(dim, num_classes - 1, 1, bias=False)
        self.decoder = ASPP(dim, num_classes)
        # The crop embeddings (proj-head space) are compared with prototypes in raw CLS space,
        # which only works because the head's output dimension equals the embedding dimension.
        self.proj_head = ProjectionHead(dim, proj_hidden, dim)
        self.encoder_k = copy.deepcopy(self.encoder).requires_grad_(False)
        self.proj_head_t = copy.deepcopy(self.proj_head).requires_grad_(False)
        self.register_buffer("prototypes", torch.randn(num_classes - 1, dim))
        queue = torch.randn(queue_size, dim)
        if queue_init == "official":  # normalised over the queue axis, every entry tagged 0
            queue, flags = F.normalize(queue, dim=0), torch.zeros(queue_size, dtype=torch.long)
        else:  # unit rows tagged uncertain, i.e. ignored until overwritten by real keys
            queue, flags = F.normalize(queue, dim=1), torch.full((queue_size,), -1, dtype=torch.long)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_tags", flags)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    # -- the student network ----------------------------------------------------------------
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(aux CAM, CAM), B x (C-1) x h x w at the token grid, without ReLU (as `cam_only`)."""
        _, tokens, aux = self.encoder(x)
        return F.conv2d(aux, self.aux_classifier.weight), F.conv2d(tokens, self.classifier.weight)

    def seg_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)[1])

    def heads(self, tokens: torch.Tensor, aux: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(F.adaptive_max_pool2d(tokens, 1)).flatten(1)
        aux_logits = self.aux_classifier(F.adaptive_max_pool2d(aux, 1)).flatten(1)
        return {"logits": logits, "aux_logits": aux_logits, "seg": self.decoder(tokens)}

    # -- category knowledge and the local reservoir -----------------------------------------
    @torch.no_grad()
    def update_prototypes(self, cls_tokens: torch.Tensor, label_idx: torch.Tensor) -> torch.Tensor:
        """EMA of each single-label image's CLS token into its class prototype (label_idx c >= 1;
        -1 for multi-label images, which are skipped), then L2-normalise all prototypes."""
        feats, labels = _gather(cls_tokens.detach().float()), _gather(label_idx.reshape(-1))
        m = self.proto_momentum
        for feat, label in zip(feats, labels.tolist(), strict=True):
            if label != -1:
                self.prototypes[label - 1] = self.prototypes[label - 1] * m + (1 - m) * feat
        self.prototypes.copy_(F.normalize(self.prototypes, p=2, dim=1))
        return self.prototypes.clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, tags: torch.Tensor) -> None:
        """FIFO: overwrite the oldest entries with this step's keys (gathered over ranks)."""
        keys, tags = _gather(keys.float()), _gather(tags.reshape(-1).long())
        n, size = keys.shape[0], self.queue.shape[0]
        if size % n:
            raise ValueError(f"queue size {size} is not a multiple of the {n} keys per step")
        ptr = int(self.queue_ptr)
        self.queue[ptr : ptr + n] = keys
        self.queue_tags[ptr : ptr + n] = tags
        self.queue_ptr[0] = (ptr + n) % size

    @torch.no_grad()
    def ema_step(self) -> None:
        ema_update(self.encoder_k, self.encoder, self.ema_momentum)
        ema_update(self.proj_head_t, self.proj_head, self.ema_momentum)

    def forward(self, inputs: torch.Tensor, w_view: torch.Tensor, crops_q: torch.Tensor, crops_k: torch.Tensor,
                tags: torch.Tensor, label_idx: torch.Tensor, *, update_prototypes: bool,
                with_contrast: bool) -> dict[str, torch.Tensor]:
        """One training forward (one call, so DDP sees every gradient path).

        `inputs` and `w_view` B x 3 x S x S, `crops_q`/`crops_k` (K*B) x 3 x s x s in crop-major
        order (crop k of every image, then crop k+1), `tags` B x (K+2) ordered [global 1,
        global 2, local 1..K]. Returns the heads' outputs, the tokens, the anchors `out_q`
        (B*(K+2) x D, same order as `tags`; only when `with_contrast`), the keys [this step's
        keys; queue] with their tags, and the prototypes.
        """
        b = inputs.shape[0]
        cls_token, tokens, aux = self.encoder(inputs)
        out = self.heads(tokens, aux)
        out["tokens"] = tokens
        out["prototypes"] = (self.update_prototypes(cls_token, label_idx) if update_prototypes
                             else self.prototypes.clone())
        # Global view 1 is the training crop itself, whose CLS token the line above computed;
        # the official code runs the encoder on it a second time, which gives the same values.
        with torch.set_grad_enabled(with_contrast and torch.is_grad_enabled()):
            g2 = self.encoder(w_view)[0]
            globals_ = torch.stack([cls_token, g2], dim=1)  # B x 2 x D
            if with_contrast:
                local_q = self.encoder(crops_q)[0].reshape(-1, b, globals_.shape[-1]).transpose(0, 1)
                out["out_q"] = self.proj_head(torch.cat([globals_, local_q], dim=1).flatten(0, 1))
        with torch.no_grad():
            self.ema_step()
            local_k = self.encoder_k(crops_k)[0].reshape(-1, b, globals_.shape[-1]).transpose(0, 1)
            keys = self.proj_head_t(torch.cat([globals_.detach(), local_k], dim=1).flatten(0, 1))
            flat_tags = tags.reshape(-1).long()
            self.enqueue(keys, flat_tags)
            out["keys"] = torch.cat([keys.float(), self.queue.clone()])
            out["key_tags"] = torch.cat([flat_tags, self.queue_tags.clone()])
        return out

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, backbone norms, heads: classifiers + projection head, decoder), trainable only."""
        backbone = [(n, p) for n, p in self.encoder.named_parameters() if p.requires_grad]
        heads = [self.classifier.weight, self.aux_classifier.weight, *self.proj_head.parameters()]
        return ([p for n, p in backbone if "norm" not in n], [p for n, p in backbone if "norm" in n],
                heads, list(self.decoder.parameters()))


def build_seco_net(seco: dict, num_classes: int, pretrained: str | None = None) -> SeCoNet:
    return SeCoNet(num_classes, seco["backbone"], pretrained, seco.get("backbone_kwargs") or {},
                   seco["aux_layer"], seco["proj_hidden"], seco["queue_size"], seco["ema_momentum"],
                   seco["proto_momentum"], seco["quirks"]["queue_init"])
