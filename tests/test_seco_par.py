"""PAR (pixel-adaptive refinement) keeps image edges while it smooths probabilities."""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.seco.par import PAR


def _two_regions(h: int = 20, w: int = 20, edge: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.zeros(1, 3, h, w)
    img[..., edge:] = 1.0  # black | white, the edge between columns 9 and 10
    p0 = torch.full((h, w), 0.5)
    p0[:, :4] = 1.0
    p0[:, 13:] = 0.0  # an ambiguous band (columns 4..12) off-centre with respect to the edge
    return img, torch.stack([p0, 1 - p0])[None]


def test_par_on_two_regions_keeps_the_edge():
    img, masks = _two_regions()
    par = PAR((1, 2, 4, 8, 12, 24), 10)
    out = par(img, masks)
    # each step's weights sum to 1 + 0.01 (softmax + 0.01 x position softmax)
    assert torch.allclose(out.sum(1), torch.full((1, 20, 20), 1.01**10), rtol=1e-4)
    pred = out.argmax(1)[0]
    assert (pred[:, :10] == 0).all() and (pred[:, 10:] == 1).all()  # the label edge is the image edge
    assert (out[0, 0, :, 9] > out[0, 1, :, 9]).all() and (out[0, 1, :, 10] > out[0, 0, :, 10]).all()
    # Without the colour edge the same propagation puts the boundary mid-band, left of column 10.
    flat = par(torch.full_like(img, 0.5), masks).argmax(1)[0]
    assert (flat[:, 9] == 1).all()


def test_par_affinity_by_hand():
    """Uniform image: the colour term is flat, so each neighbour weighs 1/48 (+ the position term)."""
    par = PAR((1, 2, 4, 8, 12, 24), 1)
    aff = par.affinity(torch.full((1, 3, 6, 6), 0.3))
    assert aff.shape == (1, 1, 48, 6, 6)
    dist = par.pos.flatten()
    pos = -((dist / dist.std()) / 0.3) ** 2
    expected = 1 / 48 + 0.01 * torch.softmax(pos, 0)
    assert torch.allclose(aff[0, 0, :, 2, 3], expected, atol=1e-6)
    assert math.isclose(aff[0, 0, :, 0, 0].sum().item(), 1.01, rel_tol=1e-5)
    # the neighbour order: offset (0, 0) of the 3x3 window at dilation 1 is the upper-left pixel
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    nb = par.neighbours(x)
    assert nb[0, 0, 0, 2, 3].item() == x[0, 0, 1, 2].item() and nb[0, 0, 7, 2, 3].item() == x[0, 0, 3, 4].item()
    assert nb[0, 0, 8, 0, 0].item() == x[0, 0, 0, 0].item()  # replicate padding at dilation 2


def test_denormalize_is_the_official_uint8_arithmetic():
    """denormalize_img2: x * 58.395 + 123.675 (per channel, literal constants) -> uint8 -> / 255."""
    from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
    from pipeline.seco.pseudo import denormalize01

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(normalize(pixels).transpose(2, 0, 1).copy())[None]
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    official = torch.zeros_like(x)
    for c in range(3):
        official[:, c] = x[:, c] * std[c] + mean[c]
    official = official.type(torch.uint8) / 255.0
    assert torch.equal(denormalize01(x), official)
    # The previous arithmetic (IMAGENET_STD * 255, clamp, floor) is one level off on some values.
    m = torch.as_tensor(IMAGENET_MEAN)[None, :, None, None] * 255
    s = torch.as_tensor(IMAGENET_STD)[None, :, None, None] * 255
    old = (x * s + m).clamp(0, 255).floor() / 255.0
    assert not torch.equal(old, official)
