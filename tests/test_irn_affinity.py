"""IRN's inter-pixel relations on hand-built cases: pair geometry, pair labels, affinities from a
boundary map, the random walk, and one training step of the boundary/displacement network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.irn.affinity import (
    affinity_losses,
    dense_affinity,
    displacement_losses,
    edge_to_affinity,
    pair_displacement,
    pair_labels,
    propagate,
    random_walk,
    reduce_label,
    transition_matrix,
    walk_to_mask,
)
from pipeline.irn.pathindex import PathIndex, path_cells, search_directions


def _pos(index: PathIndex, y: int, x: int) -> int:
    """Column of source cell (y, x) in the index's D x N pair arrays."""
    return y * index.source_shape[1] + (x - index.margin)


def _dir(index: PathIndex, dy: int, dx: int) -> int:
    return [tuple(d) for d in index.directions.tolist()].index((dy, dx))


# ---- PathIndex ---------------------------------------------------------------------------
def test_search_directions_are_one_half_of_the_disc():
    dirs = search_directions(3)
    assert len(dirs) == 12
    disc = {(y, x) for y in range(-2, 3) for x in range(-2, 3) if 0 < y * y + x * x < 9}
    assert set(dirs) | {(-y, -x) for y, x in dirs} == disc  # every unordered pair once
    assert not set(dirs) & {(-y, -x) for y, x in dirs}
    assert len(search_directions(10)) == 152  # IRN's training radius
    assert len(search_directions(5)) == 34    # IRN's random-walk radius


def test_path_cells_run_along_the_line_destination_first():
    assert path_cells((0, 2)).tolist() == [[0, 2], [0, 1], [0, 0]]
    assert sorted(path_cells((1, 1)).tolist()) == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert path_cells((1, 1))[0].tolist() == [1, 1]
    # (2, -1): |2x + y| < sqrt(5) holds for every cell of the 3 x 2 box
    cells = path_cells((2, -1)).tolist()
    assert cells[0] == [2, -1] and sorted(cells) == [[0, -1], [0, 0], [1, -1], [1, 0], [2, -1], [2, 0]]
    # (1, 3): |x - 3y| < sqrt(10) for all 8 cells of its box, and (3, 1) by symmetry
    assert len(path_cells((1, 3))) == 8 and len(path_cells((3, 1))) == 8
    assert len(path_cells((0, 4))) == 5  # a straight run: the cells on the line only


def test_path_index_sources_and_destinations():
    index = PathIndex(3, (6, 7))
    assert index.margin == 2 and index.source_shape == (4, 3) and index.num_directions == 12
    assert index.src_indices.tolist() == [y * 7 + x for y in range(4) for x in range(2, 5)]
    for d, (dy, dx) in enumerate(index.directions.tolist()):
        assert index.dst_indices[d].tolist() == [(y + dy) * 7 + x + dx for y in range(4) for x in range(2, 5)]
    # grouped by path length, shortest first: (0, 1) has 2 cells, (0, 2) 3
    lengths = [g.shape[1] for g in index.path_groups]
    assert lengths == sorted(lengths) and lengths[0] == 2
    with pytest.raises(ValueError, match="too small"):
        PathIndex(3, (2, 4))


# ---- Pair labels -------------------------------------------------------------------------
LABEL = np.array([[0, 0, 1, 1, 255],
                  [0, 0, 1, 1, 1],
                  [2, 2, 2, 1, 1]], np.uint8)


def test_pair_labels_on_a_tiny_map():
    index = PathIndex(2, LABEL.shape)  # directions (0,1), (1,-1), (1,0), (1,1); sources rows 0-1, cols 1-3
    bg, fg, neg = pair_labels(LABEL, index, num_classes=3)
    assert bg.shape == (4, 6)

    def kind(y, x, dy, dx):
        d, s = _dir(index, dy, dx), _pos(index, y, x)
        return "bg" if bg[d, s] else "fg" if fg[d, s] else "neg" if neg[d, s] else "ignored"

    assert [kind(0, 1, *d) for d in ((0, 1), (1, -1), (1, 0), (1, 1))] == ["neg", "bg", "bg", "neg"]
    assert [kind(0, 3, *d) for d in ((0, 1), (1, -1), (1, 0), (1, 1))] == ["ignored", "fg", "fg", "fg"]
    assert [kind(1, 1, *d) for d in ((0, 1), (1, -1), (1, 0), (1, 1))] == ["neg", "neg", "neg", "neg"]
    assert [kind(1, 2, *d) for d in ((0, 1), (1, -1), (1, 0), (1, 1))] == ["fg", "neg", "neg", "fg"]
    assert not (bg & fg).any() and not (bg & neg).any() and not (fg & neg).any()
    # an uncertain source takes part in no pair
    unsure = LABEL.copy()
    unsure[0, 1] = 255
    bg2, fg2, neg2 = pair_labels(unsure, index, num_classes=3)
    assert not (bg2 | fg2 | neg2)[:, _pos(index, 0, 1)].any()


def test_reduce_label_is_nearest_to_the_stride_grid():
    label = np.kron(np.array([[1, 2], [3, 255]], np.uint8), np.ones((8, 8), np.uint8))
    assert reduce_label(label, 4).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 255, 255], [3, 3, 255, 255]]


# ---- Affinities and losses ---------------------------------------------------------------
def test_affinity_from_a_boundary_map():
    index = PathIndex(3, (4, 7))
    edge = torch.zeros(1, 4, 7)
    edge[0, :, 3] = 1.0            # a vertical boundary in column 3
    edge[0, 0, 5] = 0.3            # a weak one on the right
    paths = [torch.from_numpy(p) for p in index.path_indices]
    aff = edge_to_affinity(edge, paths)[0]

    def a(y, x, dy, dx):
        return aff[_dir(index, dy, dx), _pos(index, y, x)].item()

    assert a(0, 2, 0, 1) == 0.0                        # across the boundary
    assert a(1, 2, 1, 2) == 0.0                        # diagonally across it
    assert a(0, 2, 1, 0) == 1.0                        # along the left side
    assert a(0, 4, 0, 2) == pytest.approx(0.7)         # path (0,4) -> (0,5) -> (0,6) meets the 0.3
    assert a(1, 4, 1, 0) == 1.0


def test_affinity_losses_follow_irn_weighting():
    aff = torch.tensor([[[0.5, 1.0, 0.0, 0.25]]])
    bg = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    fg = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])
    neg = torch.tensor([[[0.0, 0.0, 1.0, 0.0]]])
    pos, negl = affinity_losses(aff, bg, fg, neg)
    bg_term = (-np.log(0.5 + 1e-5) - np.log(1 + 1e-5)) / (2 + 1e-5)
    fg_term = -np.log(0.25 + 1e-5) / (1 + 1e-5)
    assert pos.item() == pytest.approx(bg_term / 2 + fg_term / 2, rel=1e-5)
    assert negl.item() == pytest.approx(-np.log(1 + 1e-5 - 0.0) / (1 + 1e-5), abs=1e-6)


def test_displacement_losses_vanish_for_a_centroid_field():
    """Cells of one object pointing at one centroid have pair differences equal to their offsets."""
    index = PathIndex(2, (5, 6))
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    disp = torch.stack([2.0 - ys, 3.0 - xs])[None]  # every cell points at (2, 3)
    pair = pair_displacement(disp, index)
    directions = torch.from_numpy(index.directions)
    ones = torch.ones(1, index.num_directions, len(index.src_indices))
    fg, bg = displacement_losses(pair, directions, torch.zeros_like(ones), ones)
    assert fg.item() == pytest.approx(0.0, abs=1e-6)
    assert bg.item() == pytest.approx(0.0, abs=1e-6)  # no background pairs
    _, bg2 = displacement_losses(torch.zeros_like(pair), directions, ones, torch.zeros_like(ones))
    assert bg2.item() == 0.0


# ---- Random walk -------------------------------------------------------------------------
def test_random_walk_by_hand_on_two_cells():
    """1 x 2 grid, boundary 0 / 0.5: affinity 0.5 between the cells, beta 1, so
    T = [[2/3, 1/3], [1/3, 2/3]] and a CAM [1, 0] walks to [2/3, 1/3], then [5/9, 4/9]."""
    edge = torch.tensor([[0.0, 0.5]])
    assert dense_affinity(edge, 2).tolist() == [[1.0, 0.5], [0.5, 1.0]]
    trans = transition_matrix(dense_affinity(edge, 2), beta=1.0)
    assert torch.allclose(trans, torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]]))
    cams = torch.tensor([[[1.0, 0.0]]])
    assert torch.allclose(random_walk(cams, edge, radius=2, beta=1.0, exp_times=0), torch.tensor([[[2 / 3, 1 / 3]]]))
    assert torch.allclose(random_walk(cams, edge, radius=2, beta=1.0, exp_times=1), torch.tensor([[[5 / 9, 4 / 9]]]))
    # beta sharpens: 0.5^10 leaves the cells nearly apart
    sharp = random_walk(cams, edge, radius=2, beta=10.0, exp_times=0)[0, 0]
    assert sharp[0].item() == pytest.approx(1 / (1 + 0.5**10))


def test_random_walk_does_not_cross_a_closed_boundary():
    edge = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    cams = torch.tensor([[[1.0, 0.5, 0.0, 0.0, 0.0]]])
    out = random_walk(cams, edge, radius=3, beta=10.0, exp_times=8)[0, 0]
    assert out[2:].abs().max().item() == 0.0
    assert out[:2].sum().item() == pytest.approx(1.5, rel=1e-5)  # the walk keeps the mass on its side
    assert out[0].item() == pytest.approx(out[1].item(), rel=1e-4)  # and spreads it evenly there


def test_propagate_orders_agree():
    g = torch.Generator().manual_seed(0)
    edge = torch.rand(6, 7, generator=g) ** 2
    trans = transition_matrix(dense_affinity(edge, 3), beta=10.0)
    x = torch.rand(2, 42, generator=g, dtype=torch.float64)
    t64 = trans.double()
    by_steps = x.clone()
    for _ in range(2**4):
        by_steps = by_steps @ t64
    assert torch.allclose(propagate(x, t64, 4), by_steps)               # 16 x 2 rows < 4 x 42: steps
    squared = t64.clone()
    for _ in range(4):
        squared = squared @ squared
    assert torch.allclose(x @ squared, by_steps)


def test_walk_to_mask_by_hand():
    rw = np.array([[[2.0, 0.4], [1.0, 0.0]]], np.float32)       # max 2 -> [[1, 0.2], [0.5, 0]]
    assert walk_to_mask(rw, [3], (2, 2), 1, 0.25).tolist() == [[3, 0], [3, 0]]
    two = np.stack([rw[0], np.array([[0.0, 0.0], [1.5, 0.0]], np.float32)])
    assert walk_to_mask(two, [3, 7], (2, 2), 1, 0.25).tolist() == [[3, 0], [7, 0]]
    assert walk_to_mask(np.zeros((1, 2, 2), np.float32), [3], (2, 2), 1, 0.25).tolist() == [[0, 0], [0, 0]]
    assert walk_to_mask(np.zeros((0, 2, 2), np.float32), [], (7, 5), 4, 0.25).shape == (7, 5)


# ---- The network and one training step ---------------------------------------------------
def _tiny_net(displacement: bool = True):
    from pipeline.irn.edge import EdgeDisplacementNet, create_irn_backbone

    torch.manual_seed(0)
    return EdgeDisplacementNet(create_irn_backbone({"name": "resnet18", "output_stride": 16}), displacement)


def test_one_train_irn_step_on_64px_inputs():
    from pipeline.irn.irn_train import build_optimizer, irn_losses

    net = _tiny_net()
    net.train()
    assert not net.backbone.training  # frozen BatchNorm statistics, as IRN
    index = PathIndex(5, (16, 16))
    label = np.zeros((64, 64), np.uint8)
    label[16:48, 8:40] = 2
    label[12:16, :] = 255
    bg, fg, neg = (torch.from_numpy(a)[None].repeat(2, 1, 1) for a in pair_labels(reduce_label(label), index, 3))
    assert bg.any() and fg.any() and neg.any()
    batch = {"image": torch.randn(2, 3, 64, 64), "bg_pos": bg, "fg_pos": fg, "neg": neg}
    edge, disp = net(batch["image"])
    assert edge.shape == (2, 1, 16, 16) and disp.shape == (2, 2, 16, 16)
    irn = {"lr": 0.1, "dp_lr_mult": 10, "weight_decay": 1e-4, "momentum": 1e-4, "poly_power": 0.9}
    opt, sched = build_optimizer(net, irn, max_iters=3)
    assert [g["lr"] for g in opt.param_groups] == [0.1, pytest.approx(1.0)]
    backbone_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    paths = [torch.from_numpy(p) for p in index.path_indices]
    losses = irn_losses(net, index, paths, torch.from_numpy(index.directions), batch, torch.device("cpu"))
    assert set(losses) == {"loss", "pos", "neg", "dp_fg", "dp_bg"}
    assert all(torch.isfinite(v) for v in losses.values())
    total = (losses["pos"] + losses["neg"]) / 2 + (losses["dp_fg"] + losses["dp_bg"]) / 2
    assert losses["loss"].item() == pytest.approx(total.item())
    opt.zero_grad()
    losses["loss"].backward()
    assert net.edge_out.weight.grad.abs().sum() > 0 and net.dp_out[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.backbone.parameters())
    opt.step()
    sched.step()
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in backbone_before.items())
    after = irn_losses(net, index, paths, torch.from_numpy(index.directions), batch, torch.device("cpu"))
    assert after["pos"].item() + after["neg"].item() != losses["pos"].item() + losses["neg"].item()


def test_boundary_only_network_and_edge_map():
    from pipeline.irn.edge import check_grid, edge_map

    net = _tiny_net(displacement=False).eval()
    assert net.param_groups()[1] == []
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    edge = edge_map(net, image, pad_to=64)
    assert edge.shape == (13, 18) and float(edge.min()) >= 0 and float(edge.max()) <= 1
    with pytest.raises(PipelineError, match="stride-4 grid"):
        check_grid((13, 18), (13, 18), 8, "cams.h5", "img")


def test_displacement_branch_leaves_the_boundary_training_unchanged():
    """The branches share only frozen features: `irn.displacement: false` trains the same boundaries."""
    from pipeline.irn.irn_train import build_optimizer, irn_losses

    index = PathIndex(5, (16, 16))
    label = np.zeros((64, 64), np.uint8)
    label[8:40, 20:56] = 1
    bg, fg, neg = (torch.from_numpy(a)[None] for a in pair_labels(reduce_label(label), index, 2))
    batch = {"image": torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
             "bg_pos": bg, "fg_pos": fg, "neg": neg}
    irn = {"lr": 0.1, "dp_lr_mult": 10, "weight_decay": 1e-4, "momentum": 1e-4, "poly_power": 0.9}
    paths = [torch.from_numpy(p) for p in index.path_indices]
    weights = []
    for displacement in (True, False):
        net = _tiny_net(displacement).train()
        opt, _ = build_optimizer(net, irn, max_iters=2)
        for _ in range(2):
            loss = irn_losses(net, index, paths, torch.from_numpy(index.directions), batch, torch.device("cpu"))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights.append({k: v for k, v in net.state_dict().items() if k.startswith(("edge_", "backbone."))})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])


# ---- Config and summary --------------------------------------------------------------------
def test_config_checks_name_the_irn_keys():
    from pipeline.config_checks import check_config
    from tests.conftest import preset_config

    cfg = preset_config(None)
    cfg["masks"]["methods"]["seco"]["refine"] = "random_walk"
    with pytest.raises(PipelineError, match=r"masks\.methods\.seco\.refine"):
        check_config(cfg)
    cfg = preset_config(None)
    cfg["irn"]["path_radius"] = 13  # 96 px crops give a 24-cell grid: no source cell is left
    with pytest.raises(PipelineError, match=r"irn\.path_radius"):
        check_config(cfg)
    cfg = preset_config(None)
    cfg["irn"]["crop_size"] = 100
    with pytest.raises(PipelineError, match=r"irn\.crop_size"):
        check_config(cfg)


def test_summary_shows_the_random_walk_masks_next_to_the_crf_masks():
    from pipeline.stages.summarize import COLUMNS, build_summary, summary_tsv

    final = {"val": {"raw": {"miou": 0.30}, "crf": {"miou": 0.33}}}
    masks = {"raw": {"miou": 0.25}, "crf": {"miou": 0.30, "uncertain_fraction": 0.1}}
    summary = build_summary(["baseline", "seco"], [{"miou": 0.2}, {"miou": 0.2}], [masks, masks], [final, final], "gt",
                            final, {"baseline": {"method": "baseline", "rw": {"miou": 0.28}}})
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["baseline"]["mask_rw_miou"] == 0.28 and rows["seco"]["mask_rw_miou"] is None
    assert rows["gt"]["mask_rw_miou"] is None
    header, baseline = summary_tsv(summary).splitlines()[:2]
    assert header.split("\t") == list(COLUMNS)
    assert baseline.split("\t")[COLUMNS.index("mask_rw_miou")] == "0.280000"
