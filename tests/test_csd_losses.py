"""CSD losses on hand-built tensors: normalisations, FG/BG consistency, purity weights."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.csd.losses import (
    bg_consistency,
    class_minmax,
    csd_losses,
    fg_consistency,
    purity_weights,
    region_cells,
    source_confidence,
    spatial_minmax,
)

CFG = {"region_fraction": 1.0, "fg_confidence": 0.5, "fg_temperature": 1.0, "bg_score": 0.1, "bg_sharpen": 10.0,
       "bg_maps": "raw", "purity_bg_score": 0.4, "purity_temperature": 1.0, "purity_kernel": 1, "empty_region_weights": "uniform"}


def test_minmax_normalisations():
    maps = torch.tensor([[[[0.0, 2.0]], [[4.0, 1.0]]]])  # B=1, C=2, 1x2
    eps = 1e-4
    cmm = class_minmax(maps)
    torch.testing.assert_close(cmm[0, :, 0, 0], torch.tensor([0.0, 4 / (4 + eps)]))
    torch.testing.assert_close(cmm[0, :, 0, 1], torch.tensor([1 / (1 + eps), 0.0]))
    smm = spatial_minmax(maps)
    torch.testing.assert_close(smm[0, 0, 0], torch.tensor([0.0, 2 / (2 + eps)]))
    torch.testing.assert_close(smm[0, 1, 0], torch.tensor([3 / (3 + eps), 0.0]))
    torch.testing.assert_close(source_confidence(maps, torch.tensor([1])), smm[:, 1])


def test_region_cells_keep_cells_fully_inside():
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[0, :2, :2] = True  # cell (0, 0) full
    region[0, 2, 2:] = True  # cell (1, 1) half
    torch.testing.assert_close(region_cells(region, (2, 2)), torch.tensor([[[True, False], [False, False]]]))
    torch.testing.assert_close(region_cells(region, (2, 2), 0.5), torch.tensor([[[True, False], [False, True]]]))
    with pytest.raises(ValueError):
        region_cells(region, (3, 3))


def _softmax(values):
    e = [math.exp(v) for v in values]
    return [x / sum(e) for x in e]


def test_fg_consistency_matches_hand_computation():
    src = torch.tensor([3.0, 1.0, 0.0]).view(1, 3, 1, 1)
    pasted = torch.tensor([0.0, 2.0, 1.0]).view(1, 3, 1, 1)
    eps = 1e-4
    p = _softmax([v * 2.0 for v in (3 / (3 + eps), 1 / (3 + eps), 0.0)])  # temperature 2
    q = _softmax([0.0, 2 / (2 + eps), 1 / (2 + eps)])
    got = fg_consistency(src, pasted, torch.tensor([0]), temperature=2.0)
    assert got.shape == (1, 1, 1)
    assert got.item() == pytest.approx(p[0] * (math.log(p[0]) - math.log(q[0])), rel=1e-5)
    # raising the pasted class on the pasted image lowers the loss
    better = pasted.clone()
    better[0, 0] = 5.0
    assert fg_consistency(src, better, torch.tensor([0]), 2.0).item() < got.item()


def test_bg_consistency_matches_hand_computation():
    src = torch.tensor([0.5, 0.0]).view(1, 2, 1, 1)
    pasted = torch.tensor([0.3, 0.2]).view(1, 2, 1, 1)
    p = _softmax([0.5, 0.0, 0.1])
    q = _softmax([3.0, 2.0, 1.0])  # 10 x [0.3, 0.2, 0.1]
    got = bg_consistency(src, pasted, bg_score=0.1, sharpen=10.0)
    assert got.item() == pytest.approx(p[2] * (math.log(p[2]) - math.log(q[2])), rel=1e-5)
    # lowering the pasted image's class activations on pasted background lowers the loss
    assert bg_consistency(src, pasted * 0.1).item() < got.item()


def test_purity_weights_sum_to_one_over_the_region():
    torch.manual_seed(0)
    cams = torch.rand(3, 4, 5, 5) * 5
    labels = torch.tensor([[1.0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 1]])
    region = torch.rand(3, 5, 5) > 0.5
    region[2] = False  # no region at all
    for kernel in (1, 3):
        w = purity_weights(cams, labels, region, kernel=kernel)
        torch.testing.assert_close(w.flatten(1).sum(1), torch.ones(3))
        assert (w[:2][~region[:2]] == 0).all() and (w[:2][region[:2]] > 0).all()
        torch.testing.assert_close(w[2], torch.full((5, 5), 1 / 25))  # PSD_WSSS's -10000 fill
    zero = purity_weights(cams, labels, region, empty="zero")
    assert zero[2].sum() == 0


def test_purity_weights_favour_ambiguous_cells():
    cams = torch.zeros(1, 2, 1, 3)
    cams[0, 0, 0] = torch.tensor([1.0, 1.0, 0.0])
    cams[0, 1, 0] = torch.tensor([0.0, 1.0, 0.0])  # both classes compete at the middle cell
    w = purity_weights(cams, torch.tensor([[1.0, 1.0]]), torch.ones(1, 1, 3, dtype=torch.bool), temperature=5.0)
    assert w[0, 0, 1] > w[0, 0, 0] > w[0, 0, 2]

    def entropy(values):
        d = [v / sum(values) for v in values]
        return -sum(x * math.log(x + 1e-6) for x in d) / math.log(3)

    # smm x labels plus a 0.4 background channel, renormalised; the last cell is background only
    h = [entropy([1, 0, 0.4]), entropy([1, 1, 0.4]), entropy([0, 0, 0.4])]
    expected = _softmax([5 * x for x in h])
    torch.testing.assert_close(w[0, 0], torch.tensor(expected), rtol=1e-3, atol=1e-5)


def _batch(fg_region, bg_region, cls=0):
    return {"paste_class": torch.tensor([cls]), "fg_label": torch.tensor([[1.0, 1.0]]),
            "bg_label": torch.tensor([[0.0, 1.0]]), "fg_region": fg_region, "bg_region": bg_region}


def test_csd_losses_mask_gradients_and_confidence():
    src = torch.zeros(1, 2, 2, 2)
    src[0, 0, 0, 0] = 4.0  # the source is confident about class 0 at cell (0, 0) only
    fg_region = torch.zeros(1, 4, 4, dtype=torch.bool)
    fg_region[0, :2, :] = True  # cells (0, 0) and (0, 1) fully inside the pasted object
    bg_region = torch.zeros(1, 4, 4, dtype=torch.bool)
    bg_region[0, 2:, 2:] = True  # cell (1, 1)
    fg_cam = torch.rand(1, 2, 2, 2, requires_grad=True)
    bg_cam = (torch.rand(1, 2, 2, 2) + 0.5).requires_grad_(True)
    out = csd_losses(src, fg_cam, bg_cam, _batch(fg_region, bg_region), CFG)
    assert out["fg_cells"].item() == pytest.approx(1 / 4) and out["bg_cells"].item() == pytest.approx(1 / 4)
    (out["fg"] + out["bg"]).backward()
    # FG gradient only at the confident cell inside the paste; BG only at the pasted-background cell
    assert fg_cam.grad[0, :, 0, 0].abs().sum() > 0
    assert fg_cam.grad[0, :, 0, 1].abs().sum() == 0 and fg_cam.grad[0, :, 1].abs().sum() == 0
    assert bg_cam.grad[0, :, 1, 1].abs().sum() > 0
    bg_cam.grad[0, :, 1, 1] = 0
    assert bg_cam.grad.abs().sum() == 0
    # the BG loss pushes class activations down on pasted background
    assert (bg_cam.grad is not None) and out["bg"].item() > 0
    # no confident source cell: no FG loss
    out = csd_losses(torch.zeros(1, 2, 2, 2), fg_cam, bg_cam, _batch(fg_region, bg_region), CFG)
    assert out["fg"].item() == 0 and out["fg_cells"].item() == 0


def test_bg_loss_on_empty_region_follows_the_switch():
    src = torch.zeros(1, 2, 2, 2)
    fg_region = torch.zeros(1, 4, 4, dtype=torch.bool)
    bg_cam = (torch.rand(1, 2, 2, 2) + 0.5)
    uniform = csd_losses(src, torch.rand(1, 2, 2, 2), bg_cam, _batch(fg_region, fg_region), CFG)
    zero = csd_losses(src, torch.rand(1, 2, 2, 2), bg_cam, _batch(fg_region, fg_region),
                      {**CFG, "empty_region_weights": "zero"})
    assert uniform["bg"].item() != 0 and zero["bg"].item() == 0


def test_max_normalized_bg_maps_are_scale_free():
    torch.manual_seed(1)
    src, pasted = torch.rand(2, 3, 2, 2) * 4, torch.rand(2, 3, 2, 2) * 4
    a = bg_consistency(src, pasted, maps="max_normalized")
    # scale-free for maps whose maximum is at least 1 (smaller maps are not amplified)
    assert src.flatten(1).amax(1).min() >= 1 and pasted.flatten(1).amax(1).min() >= 1
    torch.testing.assert_close(bg_consistency(src * 7, pasted * 2, maps="max_normalized"), a, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(bg_consistency(src * 7, pasted * 2), bg_consistency(src, pasted))
    # the same as the raw loss on maps divided by their image maximum
    norm = (src / src.flatten(1).amax(1).view(-1, 1, 1, 1), pasted / pasted.flatten(1).amax(1).view(-1, 1, 1, 1))
    torch.testing.assert_close(a, bg_consistency(*norm))
    with pytest.raises(ValueError):
        bg_consistency(src, pasted, maps="other")


def test_image_max_normalization_never_amplifies():
    """Large maps are scaled to a maximum of 1; a near-zero map is left as it is (its gradient
    is not multiplied by 1/max)."""
    from pipeline.csd.losses import image_max_normalized

    big = torch.tensor([[[[0.0, 5.0], [10.0, 20.0]]]])
    assert torch.allclose(image_max_normalized(big), big / 20)
    tiny = torch.full((1, 1, 2, 2), 1e-3, requires_grad=True)
    out = image_max_normalized(tiny)
    assert torch.allclose(out, tiny.detach())
    out.sum().backward()
    assert torch.allclose(tiny.grad, torch.ones_like(tiny))
