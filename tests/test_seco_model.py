"""SeCo's network: encoder outputs, EMA teacher, key queue, class prototypes, one training forward."""

from __future__ import annotations

import pytest
import torch

from pipeline.seco import SeCoNet, ViTEncoder, ema_update

TINY_VIT = {"patch_size": 8, "depth": 4, "embed_dim": 32, "num_heads": 2, "img_size": 32}


def tiny_net(queue_size: int = 6, queue_init: str = "official", num_classes: int = 4) -> SeCoNet:
    torch.manual_seed(0)
    return SeCoNet(num_classes, "vit_tiny_patch16_224", None, TINY_VIT, aux_layer=-3, proj_hidden=16,
                   queue_size=queue_size, ema_momentum=0.9, proto_momentum=0.9, queue_init=queue_init)


def test_encoder_outputs_and_frozen_position_embedding():
    enc = ViTEncoder("vit_tiny_patch16_224", None, -3, **TINY_VIT)
    assert not enc.vit.pos_embed.requires_grad and enc.aux_index == 1
    cls, tokens, aux = enc(torch.randn(2, 3, 48, 40))  # not the 32 the embedding was built for
    assert cls.shape == (2, 32) and tokens.shape == (2, 32, 6, 5) and aux.shape == (2, 32, 6, 5)
    # At the native grid the embedding is used as is; elsewhere it is resized bicubically.
    assert torch.equal(enc.pos_embed(4, 4), enc.vit.pos_embed)
    assert enc.pos_embed(6, 5).shape == (1, 31, 32)
    # Sizes that are not multiples of the patch are floored, like the official strided conv.
    assert enc(torch.randn(1, 3, 50, 44))[1].shape[-2:] == (6, 5)
    with pytest.raises(ValueError, match="aux_layer"):
        ViTEncoder("vit_tiny_patch16_224", None, -1, **TINY_VIT)


def test_ema_update():
    teacher, student = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        teacher.bias.fill_(-1.0)
        student.weight.fill_(3.0)
        student.bias.fill_(1.0)
    ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, torch.full((1, 2), 1.2))  # 0.9 * 1 + 0.1 * 3
    assert torch.allclose(teacher.bias, torch.tensor([-0.8]))
    assert torch.allclose(student.weight, torch.full((1, 2), 3.0))


def test_teacher_starts_as_copy_and_gets_no_gradient():
    net = tiny_net()
    for p_s, p_t in zip(net.encoder.parameters(), net.encoder_k.parameters(), strict=True):
        assert torch.equal(p_s, p_t) and not p_t.requires_grad
    assert all(not p.requires_grad for p in net.proj_head_t.parameters())


def test_queue_fifo_wraps_around():
    net = tiny_net(queue_size=6)
    assert torch.equal(net.queue_tags, torch.zeros(6, dtype=torch.long))  # official: tagged 0
    for step in range(4):  # 2 keys per step into 6 slots: the 4th step overwrites slots 0-1
        keys = torch.full((2, 32), float(step + 1))
        net.enqueue(keys, torch.tensor([step, -step]))
    assert net.queue_ptr.item() == 2
    assert net.queue[:, 0].tolist() == [4, 4, 2, 2, 3, 3]
    assert net.queue_tags.tolist() == [3, -3, 1, -1, 2, -2]
    with pytest.raises(ValueError, match="multiple"):
        net.enqueue(torch.zeros(4, 32), torch.zeros(4))


def test_queue_init_modes():
    official = tiny_net(queue_size=6)
    assert torch.allclose(official.queue.norm(dim=0), torch.ones(32))  # normalised over the queue
    empty = tiny_net(queue_size=6, queue_init="empty")
    assert torch.allclose(empty.queue.norm(dim=1), torch.ones(6)) and (empty.queue_tags == -1).all()


def test_prototypes_update_only_from_single_label_images():
    net = tiny_net()
    before = net.prototypes.clone()
    feats = torch.randn(3, 32)
    net.update_prototypes(feats, torch.tensor([2, -1, 1]))  # image 1 is multi-label (-1)
    norm = torch.nn.functional.normalize
    assert torch.allclose(net.prototypes[1], norm(0.9 * before[1] + 0.1 * feats[0], dim=0), atol=1e-6)
    assert torch.allclose(net.prototypes[0], norm(0.9 * before[0] + 0.1 * feats[2], dim=0), atol=1e-6)
    assert torch.allclose(net.prototypes[2], norm(before[2], dim=0), atol=1e-6)  # only renormalised
    net.update_prototypes(torch.randn(1, 32) * 100, torch.tensor([-1]))  # multi-label only: unchanged
    assert torch.allclose(net.prototypes[1], norm(0.9 * before[1] + 0.1 * feats[0], dim=0), atol=1e-6)


def test_training_forward_shapes_and_order():
    net = tiny_net(queue_size=24)
    b, k = 2, 4
    x, w = torch.randn(b, 3, 32, 32), torch.randn(b, 3, 32, 32)
    crops = torch.randn(k * b, 3, 16, 16)
    tags = torch.tensor([[1, 1, 0, 1, -1, 2], [2, 2, 2, 0, 0, -1]])
    out = net(x, w, crops, crops.clone(), tags, torch.tensor([1, -1]), update_prototypes=True, with_contrast=True)
    assert out["logits"].shape == (b, 3) and out["aux_logits"].shape == (b, 3)
    assert out["seg"].shape == (b, 4, 4, 4) and out["tokens"].shape == (b, 32, 4, 4)
    assert out["out_q"].shape == (b * (k + 2), 32)
    assert torch.allclose(out["out_q"].norm(dim=1), torch.ones(b * (k + 2)))
    assert out["keys"].shape == (b * (k + 2) + 24, 32)
    assert out["key_tags"][: b * (k + 2)].tolist() == tags.reshape(-1).tolist()
    # this step's keys are also in the queue (enqueued before the loss), at slots 0..11
    assert torch.allclose(out["keys"][:12], out["keys"][12:24])
    # the first anchor of image 0 is its training crop's CLS token through the projection head
    cls = net.encoder(x)[0]
    assert torch.allclose(out["out_q"][0], net.proj_head(cls)[0], atol=1e-5)
    loss = out["logits"].sum() + out["out_q"].sum() + out["seg"].sum()
    loss.backward()
    assert net.encoder.vit.blocks[0].attn.qkv.weight.grad is not None
    assert net.encoder_k.vit.blocks[0].attn.qkv.weight.grad is None
    # without the contrastive terms no anchors are computed; the queue still advances
    ptr = net.queue_ptr.item()
    out = net(x, w, crops, crops, tags, torch.tensor([1, -1]), update_prototypes=False, with_contrast=False)
    assert "out_q" not in out and net.queue_ptr.item() == (ptr + 12) % 24


def test_param_groups_cover_trainable_parameters_once():
    net = tiny_net()
    groups = net.param_groups()
    ids = [id(p) for g in groups for p in g]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    assert all(p.ndim == 1 for p in groups[1])  # LayerNorm weights and biases
