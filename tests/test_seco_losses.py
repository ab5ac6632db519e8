"""SeCo's losses on hand-built tensors with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.seco.losses import (
    DenseEnergyLoss,
    affinity_labels,
    balanced_seg_loss,
    dense_energy,
    dense_gaussian_filter,
    lig_loss,
    lil_loss,
    multilabel_cls_loss,
    ptc_loss,
    rectify_tags,
)


def test_multilabel_cls_loss():
    logits = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([[1.0, 0.0]])
    # class 0 positive with logit 0: log 2; class 1 negative with logit 2: log(1 + e^2); mean.
    expected = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert multilabel_cls_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_ptc_loss_on_three_tokens():
    s = 1 / math.sqrt(2)
    tokens = torch.tensor([[1.0, 1.0, s], [0.0, 0.0, s]]).reshape(1, 2, 1, 3)  # D=2, h=1, w=3
    aff = affinity_labels(torch.tensor([[[1, 1, 0]]]))
    assert aff[0].tolist() == [[255, 1, 0], [1, 255, 0], [0, 0, 255]]
    # 2 positive pairs with |cos| 1, 4 negative pairs with |cos| 1/sqrt(2)
    expected = 0.5 * (1 - 2 / 3) + 0.5 * (4 * s) / 5
    assert ptc_loss(tokens, aff).item() == pytest.approx(expected, rel=1e-6)
    ignored = affinity_labels(torch.tensor([[[1, 1, 255]]]))
    assert ptc_loss(tokens, ignored).item() == pytest.approx(0.5 * (1 - 2 / 3), rel=1e-6)


def test_balanced_seg_loss():
    logits = torch.tensor([[2.0, 0.0, 5.0], [0.0, 0.0, -5.0]]).reshape(1, 2, 1, 3)
    labels = torch.tensor([[[0, 1, 255]]])
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(2))
    assert balanced_seg_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    # A crop where everything is ignored gives 0, not ToCo's NaN.
    assert balanced_seg_loss(logits, torch.full((1, 1, 3), 255)).item() == 0.0


def _lil_example():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    return q, keys, torch.tensor([1, 2]), torch.tensor([1, 2, 1])


def test_lil_official_form():
    q, keys, tags, key_tags = _lil_example()
    # After the row-max subtraction: q0 -> [0, -1, -0.4], q1 -> [-1, 0, -0.2]. exp == 1 (the row
    # max) leaves the denominator; log_prob is summed over all 3 columns; 1 nonzero positive pair.
    lz0 = math.log(math.exp(-1) + math.exp(-0.4))
    lz1 = math.log(math.exp(-1) + math.exp(-0.2))
    expected = ((0.4 + 3 * lz0) + (3 * lz1)) / 1 / 2
    loss, revised = lil_loss(q, keys, tags, key_tags, 1.0, 1.0, "official")
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert revised.tolist() == [1, 2]
    # An uncertain key is removed from the denominators but still counts as a column.
    keys4 = torch.cat([keys, torch.tensor([[1.0, 0.0]])])
    loss4, _ = lil_loss(q, keys4, tags, torch.tensor([1, 2, 1, -1]), 1.0, 1.0, "official")
    assert loss4.item() == pytest.approx(((0.4 + 4 * lz0) + 4 * lz1) / 2, rel=1e-5)
    # An uncertain anchor contributes nothing but still counts in the mean over anchors.
    q3 = torch.cat([q, torch.tensor([[1.0, 0.0]])])
    loss3, revised3 = lil_loss(q3, keys, torch.tensor([1, 2, -1]), key_tags, 1.0, 1.0, "official")
    assert loss3.item() == pytest.approx(expected * 2 / 3, rel=1e-5)
    assert revised3.tolist() == [1, 2, -1]


def test_lil_supcon_form():
    q, keys, tags, key_tags = _lil_example()
    lse0 = math.log(1 + math.exp(-1) + math.exp(-0.4))
    lse1 = math.log(math.exp(-1) + 1 + math.exp(-0.2))
    expected = ((lse0 + (0.4 + lse0)) / 2 + lse1) / 2
    loss, _ = lil_loss(q, keys, tags, key_tags, 1.0, 1.0, "supcon")
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_lil_temperature_ratio_and_gradient():
    _, keys, tags, key_tags = _lil_example()
    q = torch.tensor([[0.9, 0.1], [0.2, 1.0]], requires_grad=True)
    loss, _ = lil_loss(q, keys, tags, key_tags, 0.5, 0.25, "official")
    half, _ = lil_loss(q, keys, tags, key_tags, 0.5, 0.5, "official")
    assert loss.item() == pytest.approx(2 * half.item(), rel=1e-6)  # the tau / base_tau factor
    loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    # Rows whose summed log_prob is not negative are skipped: the row max leaves the denominator,
    # so confident rows (Z < 1) give exactly 0 in the official form.
    sharp, _ = lil_loss(torch.eye(2), keys, tags, key_tags, 0.5, 0.5, "official")
    assert sharp.item() == 0.0


def test_tag_rectification():
    # Row 0: 11 positives below the mean vs 1 entry at/above -> ratio 11 > 10: reset to 0.
    # Row 1: 10 below vs 1 -> ratio 10, kept.
    row0 = torch.tensor([-1.0] * 11 + [0.0])
    row1 = torch.tensor([-1.0] * 10 + [0.0, 0.0])
    revised, noisy = rectify_tags(torch.stack([row0, row1]), torch.tensor([3, 4]))
    assert revised.tolist() == [0, 4] and noisy.tolist() == [True, False]


def test_lil_rectifies_noisy_anchor_and_lig_uses_revision():
    # Anchor 0 (tag 1) disagrees with its 21 positive keys (21 below the row mean vs 2 zero
    # columns at it: 10.5 > 10); anchor 1 (tag 2) has 1 positive.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.cat([torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]]).repeat(21, 1), torch.tensor([[0.0, 1.0]])])
    key_tags = torch.tensor([3] + [1] * 21 + [2])
    _, revised = lil_loss(q, keys, torch.tensor([1, 2]), key_tags, 1.0, 1.0, "official")
    assert revised.tolist() == [0, 2]
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # with the revised tags only anchor 1 is a positive of LIG
    assert lig_loss(q, protos, revised, 1.0, 1.0, "supcon").item() == pytest.approx(0.0, abs=1e-6)


def test_lig_official_and_supcon():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    q = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.6, 0.8], [1.0, 0.0]])
    tags = torch.tensor([1, 2, 0, -1])  # classes 1 and 2 present; 0 and -1 contribute nothing
    expected = math.log(1 + math.exp(-0.2))  # each: CE over {P1, P2}, logit gap 0.2
    assert lig_loss(q, protos, tags, 1.0, 1.0, "official").item() == pytest.approx(expected, rel=1e-5)
    assert lig_loss(q, protos, tags, 1.0, 1.0, "supcon").item() == pytest.approx(expected, rel=1e-5)
    # A logit of exactly 0 has exp == 1 and drops out of the official denominator.
    q0, t0 = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    two = protos[:2]
    present = torch.tensor([1, 2])
    assert lig_loss(q0.repeat(2, 1), two, present * 0 + t0, 1.0, 1.0, "official").item() == pytest.approx(0.0, abs=1e-6)
    both = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert lig_loss(both, two, present, 1.0, 1.0, "official").item() == pytest.approx(0.0, abs=1e-6)
    assert lig_loss(both, two, present, 1.0, 1.0, "supcon").item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-5)


def test_dense_energy_by_hand():
    images = torch.tensor([[0.0, 10.0], [0.0, 0.0], [0.0, 0.0]]).reshape(1, 3, 1, 2)
    probs = torch.tensor([[0.8, 0.6], [0.2, 0.4]]).reshape(1, 2, 1, 2).requires_grad_(True)
    roi = torch.ones(1, 1, 2)
    unlabeled = torch.zeros(1, 1, 2, dtype=torch.bool)
    w = math.exp(-0.5 * (1 + 1))  # 1 pixel apart at sigma_xy 1, colour 10 apart at sigma_rgb 10
    s0, s1 = (0.8, 0.2), (0.6, 0.4)
    ws0 = [a + w * b for a, b in zip(s0, s1, strict=True)]
    ws1 = [b + w * a for a, b in zip(s0, s1, strict=True)]
    as0 = [0.2 * v for v in ws0]  # gate = 1 - max prob
    as1 = [0.4 * v for v in ws1]
    expected = -sum(p * a for p, a in zip(s0 + s1, as0 + as1, strict=True))
    energy = dense_energy(images, probs, roi, unlabeled, 10.0, 1.0)
    assert energy.item() == pytest.approx(expected, rel=1e-5)
    energy.backward()
    grad = torch.tensor([[as0[0], as1[0]], [as0[1], as1[1]]]).reshape(1, 2, 1, 2) * -2
    assert torch.allclose(probs.grad, grad, rtol=1e-5)
    # Unlabelled pixels get gate 1; pixels outside the ROI neither give nor receive energy.
    e_unl = dense_energy(images, probs.detach(), roi, torch.tensor([[[True, False]]]), 10.0, 1.0)
    assert e_unl.item() == pytest.approx(-(sum(p * v for p, v in zip(s0, ws0, strict=True)) + sum(p * a for p, a in zip(s1, as1, strict=True))), rel=1e-5)
    e_roi = dense_energy(images, probs.detach(), torch.tensor([[[1.0, 0.0]]]), unlabeled, 10.0, 1.0)
    assert e_roi.item() == pytest.approx(-0.2 * (0.8**2 + 0.2**2), rel=1e-5)


def test_dense_filter_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 4, 5, generator=g) * 255
    vals = torch.rand(1, 2, 4, 5, generator=g)
    out = dense_gaussian_filter(images, vals, 15.0, 2.0)
    pix = [(y, x) for y in range(4) for x in range(5)]
    ref = torch.zeros(2, 20)
    for i, (yi, xi) in enumerate(pix):
        for yj, xj in pix:
            d = ((xi - xj) ** 2 + (yi - yj) ** 2) / 4.0 + ((images[0, :, yi, xi] - images[0, :, yj, xj]) ** 2).sum() / 225.0
            ref[:, i] += torch.exp(-0.5 * d) * vals[0, :, yj, xj]
    assert torch.allclose(out.reshape(2, 20), ref, rtol=1e-4)


def test_energy_downsampled_approximation_keeps_magnitude():
    """The area-downsampled kernel (max_side) stays close to the exact dense energy."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    images = torch.stack([(xx > 30).float() * 200, yy * 2, xx * 2])[None] + torch.rand(1, 3, 64, 64, generator=g)
    logits = torch.stack([(xx - 30) / 8, (30 - xx) / 8, yy * 0])[None]
    probs = logits.softmax(dim=1)
    roi = torch.ones(1, 64, 64)
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    exact = DenseEnergyLoss(1.0, 15, 100, 0.5, max_side=None)(images, probs, roi, labels)
    approx = DenseEnergyLoss(1.0, 15, 100, 0.5, max_side=16)(images, probs, roi, labels)
    assert exact.item() < 0
    assert approx.item() == pytest.approx(exact.item(), rel=0.15)
