"""MCTformer-V2: class tokens and positions, attention shapes, the fused and refined maps against
hand-computed cases, min-max normalisation, the official schedule, a training step, and the two
stages end to end on the tiny synthetic data (64 x 64 crops, a 2-block ViT)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.io.h5store import ArtifactReader
from pipeline.mctformer.cams import (
    class_patch_attention,
    fuse,
    minmax_normalize,
    multiscale_maps,
    patch_affinity,
    refine,
    refined_maps,
)
from pipeline.mctformer.model import MCTformerV2, mctformer_loss
from pipeline.mctformer.train import build_optimizer, epoch_lr, iterations, scaled_lr
from tests.masks_helpers import tiny_cfg, write_index

KW = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 64}
C = 4


def _net(seed: int = 0, **kw) -> MCTformerV2:
    torch.manual_seed(seed)
    return MCTformerV2(C, "vit_tiny_patch16_224", None, {**KW, **kw}, drop_path_rate=0.0)


def test_class_tokens_positions_and_attention_shapes():
    net = _net().eval()
    assert net.cls_tokens.shape == (1, C, 32)
    assert net.pos_embed.shape == (1, C + 64, 32)  # C class positions + the 8 x 8 patch grid
    assert net.vit.cls_token is None and net.vit.pos_embed is None  # the single-token ones are gone
    out = net(torch.randn(2, 3, 64, 64), with_attn=True)
    assert out.cls_logits.shape == out.patch_logits.shape == (2, C)
    assert out.patch_cam.shape == (2, C, 8, 8)
    assert out.attn.shape == (2, 2, C + 64, C + 64)  # blocks x batch x T x T, heads averaged
    assert torch.allclose(out.attn.sum(-1), torch.ones(2, 2, C + 64), atol=1e-5)
    # the logits are what the official model computes from its tokens
    assert torch.allclose(out.patch_logits, out.patch_cam.mean((2, 3)), atol=1e-6)
    # the attention-returning block path equals timm's fused forward
    plain = net(torch.randn(2, 3, 64, 64).fill_(0.3))
    with_attn = net(torch.randn(2, 3, 64, 64).fill_(0.3), with_attn=True)
    assert torch.allclose(plain.cls_logits, with_attn.cls_logits, atol=1e-5)
    assert torch.allclose(plain.patch_cam, with_attn.patch_cam, atol=1e-5)


def test_other_input_sizes_interpolate_patch_positions_only():
    net = _net().eval()
    assert torch.equal(net.patch_pos_embed(8, 8), net.pos_embed[:, C:])  # the training grid: as stored
    assert net.patch_pos_embed(9, 7).shape == (1, 63, 32)
    out = net(torch.randn(1, 3, 72, 60), with_attn=True)  # 60 is floored to 7 patches, as the strided conv does
    assert out.patch_cam.shape == (1, C, 9, 7) and out.attn.shape == (2, 1, C + 63, C + 63)


def test_pretrained_single_token_is_copied_to_every_class_token(tmp_path):
    from pipeline.backbones import create_backbone

    torch.manual_seed(1)
    vit = create_backbone("vit_tiny_patch16_224", None, num_classes=0, **KW)
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    net = MCTformerV2(C, "vit_tiny_patch16_224", str(path), KW, drop_path_rate=0.0)
    assert torch.equal(net.cls_tokens[0], vit.cls_token[0].expand(C, -1))
    assert torch.equal(net.pos_embed[0, :C], vit.pos_embed[0, :1].expand(C, -1))
    assert torch.equal(net.pos_embed[0, C:], vit.pos_embed[0, 1:])
    assert torch.equal(net.vit.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)


def test_fused_and_refined_maps_against_a_hand_computed_case():
    c, grid = 2, (2, 2)
    t = c + 4
    attn = torch.zeros(3, 1, t, t)  # 3 blocks, tokens [cls0, cls1, p0, p1, p2, p3]
    attn[0, 0, :c, c:] = 100.0  # the first block is outside the last 2
    attn[1, 0, 0, c:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    attn[2, 0, 0, c:] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    attn[1, 0, 1, c:] = torch.tensor([0.0, 0.0, 5.0, 1.0])
    ca = class_patch_attention(attn, c, layers=2, grid=grid)
    assert torch.equal(ca, torch.tensor([[[[2.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [5.0, 1.0]]]]))
    patch_cam = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]], [[3.0, 1.0], [-2.0, 1.0]]]])
    fused = fuse(ca, patch_cam)  # ReLU'd PatchCAM times the class-to-patch attention
    assert torch.equal(fused, torch.tensor([[[[2.0, 0.0], [1.5, 8.0]], [[0.0, 0.0], [0.0, 1.0]]]]))

    # patch-to-patch attention summed over all 3 blocks: P = identity + a swap of p0 and p1
    attn[0, 0, c:, c:] = torch.eye(4)
    attn[2, 0, c + 0, c + 1] = 1.0
    attn[2, 0, c + 1, c + 0] = 1.0
    aff = patch_affinity(attn, c)
    assert torch.equal(aff[0], torch.eye(4) + torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.0]]))
    refined = refine(fused, aff)
    # class 0: vec(F) = [2, 0, 1.5, 8] -> [2 + 0, 0 + 2, 1.5, 8]; class 1: [0, 0, 0, 1] unchanged
    assert torch.equal(refined, torch.tensor([[[[2.0, 2.0], [1.5, 8.0]], [[0.0, 0.0], [0.0, 1.0]]]]))


def test_minmax_normalisation_per_plane():
    x = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]])
    y = minmax_normalize(x)
    assert torch.allclose(y[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]), atol=1e-6)
    assert torch.equal(y[1], torch.zeros(2, 2))  # a flat plane: 0 (the official eps 1e-8)


def test_multiscale_maps_sum_scales_and_flips_then_normalise():
    net = _net().eval()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 52, 3), dtype=np.uint8)
    maps = multiscale_maps(net, img, [2, 4], [1.0, 0.5], layers=2)
    assert maps.shape == (2, 60, 52) and maps.dtype == np.float32
    assert np.allclose(maps.min((1, 2)), 0) and np.allclose(maps.max((1, 2)), 1, atol=1e-3)  # eps 1e-8 vs a small range
    # against the formula, written out for scale 1.0 alone
    one = multiscale_maps(net, img, [2, 4], [1.0], layers=2)
    from pipeline.data.transforms import normalize, to_chw

    x = torch.from_numpy(to_chw(normalize(img)))[None]
    with torch.no_grad():
        r = refined_maps(net, torch.cat([x, x.flip(-1)]), 2)
    up = torch.nn.functional.interpolate(r[:, [1, 3]], size=(60, 52), mode="bilinear", align_corners=False)
    expect = minmax_normalize(up[0] + up[1].flip(-1)).numpy()
    assert np.allclose(one, expect, atol=1e-5)
    assert multiscale_maps(net, img, [], [1.0], layers=2).shape == (0, 60, 52)
    # without the patch-affinity refinement: the fused map itself
    with torch.no_grad():
        out = net(x, with_attn=True)
        fused = fuse(class_patch_attention(out.attn, C, 2, (7, 6)), out.patch_cam)
        assert torch.equal(refined_maps(net, x, 2, patch_refine=False), fused)


def test_official_lr_rule_and_per_epoch_schedule():
    mct = {"lr": 5e-4, "batch_size": 64, "epochs": 60, "warmup_epochs": 5, "warmup_lr": 1e-6, "min_lr": 1e-5}
    peak = scaled_lr(mct, 1)
    assert peak == pytest.approx(6.25e-5)
    assert epoch_lr(0, mct, peak) == epoch_lr(1, mct, peak) == pytest.approx(1e-6)  # stepped after each epoch
    assert epoch_lr(2, mct, peak) == pytest.approx(1e-6 + (peak - 1e-6) / 5)
    assert epoch_lr(6, mct, peak) == pytest.approx(1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * 5 / 60)))
    assert epoch_lr(59, mct, peak) > 1e-5 and iterations(130, {**mct, "epochs": 3}, 1) == (2, 6)


def test_training_steps_decrease_the_loss_and_skip_decay_on_tokens():
    net = _net().train()
    mct = {"lr": 0.5, "batch_size": 8, "epochs": 1, "warmup_epochs": 0, "warmup_lr": 1e-6, "min_lr": 1e-5,
           "weight_decay": 0.05}
    opt, sched = build_optimizer(net, mct, 1, per_epoch=100)
    no_decay = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(net.cls_tokens) in no_decay and id(net.pos_embed) in no_decay and id(net.head.bias) in no_decay
    assert id(net.head.weight) not in no_decay
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 64, 64, generator=g)
    y = (torch.rand(8, C, generator=g) > 0.5).float()
    losses = []
    for _ in range(5):
        loss, parts = mctformer_loss(net(x), y)
        assert loss.item() == pytest.approx(parts["cls_loss"] + parts["patch_loss"], rel=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_stages_train_and_write_a_readable_cam_cache(tiny_synthetic, tmp_path):
    from pipeline.runtime.checkpoint import load_final
    from pipeline.stages.make_cam_mctformer import main as make_cam_main
    from pipeline.stages.train_mctformer import main as train_main

    cfg = tiny_cfg(tiny_synthetic)
    cfg["mctformer"] = {**cfg["mctformer"], "backbone_kwargs": KW, "crop_size": 64, "resize_long": [56, 80],
                        "batch_size": 8, "epochs": 2, "warmup_epochs": 1, "ckpt_every": 5, "scales": [1.0, 0.5],
                        "cam_layers": 2}
    index = tmp_path / "index.json"
    idx = write_index(cfg, index)
    sub = {k: cfg[k] for k in ("seed", "dataset", "runtime", "mctformer")}
    model = tmp_path / "model_final.pth"
    train_main(["--cfg", json.dumps(sub), "--index", str(index), "--threads", "2", "--out", str(model),
                "--ckpt-dir", str(tmp_path / "runs"), "--metrics", str(tmp_path / "metrics.csv")])
    state, meta = load_final(model)
    assert meta["iterations"] == 2 * (40 // 8) and "cls_tokens" in state
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "cls_loss", "patch_loss"} <= set(header)
    # killed after iteration 5 (checkpoints after 5 and 10): the resumed run ends with the same weights
    import shutil

    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "runs/prev.pth", tmp_path / "b/last.pth")
    train_main(["--cfg", json.dumps(sub), "--index", str(index), "--threads", "2", "--out", str(tmp_path / "b.pth"),
                "--ckpt-dir", str(tmp_path / "b"), "--metrics", str(tmp_path / "b.csv")])
    assert (tmp_path / "b.csv").read_text().splitlines()[1].split(",")[0] == "5"  # resumed, not restarted
    resumed, _ = load_final(tmp_path / "b.pth")
    assert all(torch.equal(state[k], resumed[k]) for k in state)
    out = tmp_path / "cams.h5"
    make_cam_main(["--cfg", json.dumps(sub), "--index", str(index), "--threads", "2", "--model", str(model),
                   "--out", str(out)])
    reader = ArtifactReader(out, expect="scores")
    ids = idx["splits"]["train"]["ids"]
    assert sorted(reader.ids()) == sorted(ids)
    for image_id in ids[:5]:
        scores, classes = reader.scores(image_id)
        assert list(classes) == idx["splits"]["train"]["labels"][image_id]
        assert scores.shape[1:] == tuple(int(v) for v in reader.attrs(image_id)["orig_size"])
        assert scores.min() > -0.1 and scores.max() < 1.1  # min-max maps, after the float16 cell fit


def test_official_transform_is_seeded_per_item_and_leaves_global_rngs_alone(tiny_synthetic, tmp_path):
    import random

    from pipeline.cli import open_indexed
    from pipeline.mctformer.train import TimmTrainDataset

    cfg = tiny_cfg(tiny_synthetic)
    index = tmp_path / "index.json"
    idx = write_index(cfg, index)
    ds, _ = open_indexed(cfg, index)
    ids = idx["splits"]["train"]["ids"]
    data = TimmTrainDataset(ds, ids, idx["splits"]["train"]["labels"],
                            {**cfg["mctformer"], "augment": "timm", "crop_size": 64})
    torch.manual_seed(5)
    random.seed(5)
    before = (torch.rand(1), random.random())
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(1)
    a = data[0]
    np.random.seed(1)
    b = data[0]
    assert a["image"].shape == (3, 64, 64) and torch.equal(a["image"], b["image"])
    assert (torch.rand(1), random.random()) == before  # timm's draws came from their own seeded states
    assert a["label"].tolist() == [1.0 if c + 1 in idx["splits"]["train"]["labels"][ids[0]] else 0.0
                                   for c in range(ds.num_classes - 1)]
