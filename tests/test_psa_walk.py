"""PSA's random walk as MCTformer runs it (pipeline/irn/psa.py): background plane, pooling to the
walk grid, the walk on hand-checkable cases, the mask decision, its config keys and its DAG."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.irn.psa import (
    pool_boundary,
    pool_scores,
    psa_mask,
    psa_random_walk,
    walked_to_mask,
    with_background,
)
from tests.conftest import REPO, tool_env

WALK = {"stride": 4, "radius": 2, "beta": 1.0, "logt": 0, "bg_score": 0.39, "alpha": None}


# ---- Background plane and pooling ----------------------------------------------------------
def test_background_plane_constant_or_psa_power():
    planes = np.array([[[0.0, 0.5, 1.0]], [[0.2, 0.0, 0.5]]], np.float32)  # 2 classes on a 1 x 3 image
    const = with_background(planes, 0.39)
    assert const.shape == (3, 1, 3)
    assert np.allclose(const[0], 0.39) and np.array_equal(const[1:], planes)  # MCTformer: --bg_thr
    power = with_background(planes, 0.39, alpha=16)
    assert np.allclose(power[0], [[0.8**16, 0.5**16, 0.0]])  # PSA: (1 - max)^alpha
    assert np.allclose(with_background(np.zeros((0, 1, 2), np.float32), 0.39, alpha=16), 1.0)
    assert np.allclose(with_background(np.zeros((0, 1, 2), np.float32), 0.39), 0.39)


def test_scores_are_zero_padded_then_average_pooled():
    """PSA pads every plane, the background's too, with 0 to a multiple of the stride."""
    x = torch.ones(2, 5, 4)
    pooled = pool_scores(x, 4)
    assert pooled.shape == (2, 2, 1)
    assert torch.allclose(pooled[:, :, 0], torch.tensor([[1.0, 0.25], [1.0, 0.25]]))


def test_boundary_is_max_pooled_to_the_walk_grid():
    edge = torch.tensor([[0.0, 0.1, 0.0], [0.0, 0.0, 0.7], [0.9, 0.0, 0.0]])  # stride-4 cells of a 12 px image
    assert torch.equal(pool_boundary(edge, 4), edge)
    assert torch.allclose(pool_boundary(edge, 8), torch.tensor([[0.1, 0.7], [0.9, 0.0]]))  # ceil(12/8) = 2
    with pytest.raises(ValueError, match="multiple"):
        pool_boundary(edge, 6)


# ---- The walk -------------------------------------------------------------------------------
def test_walk_by_hand_on_two_cells():
    """Boundary 0 / 0.5 on a 1 x 2 grid: affinity 0.5. beta 1, no squaring: T = [[2/3, 1/3], [1/3, 2/3]];
    beta 8, logt 6: T = [[256, 1], [1, 256]] / 257, whose second eigenvalue 255/257 is raised to 2^6.
    The constant background plane is left as it is (T's columns sum to 1)."""
    edge = torch.tensor([[0.0, 0.5]])
    scores = torch.tensor([[[0.39, 0.39]], [[1.0, 0.0]]])
    out = psa_random_walk(scores, edge, radius=2, beta=1.0, logt=0)
    assert torch.allclose(out, torch.tensor([[[0.39, 0.39]], [[2 / 3, 1 / 3]]]))
    out = psa_random_walk(scores, edge, radius=2, beta=8.0, logt=6)
    lam = (255 / 257) ** 64
    assert torch.allclose(out, torch.tensor([[[0.39, 0.39]], [[(1 + lam) / 2, (1 - lam) / 2]]]), atol=1e-5)


def test_walk_does_not_cross_a_closed_boundary():
    edge = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    scores = torch.tensor([[[0.39] * 5], [[1.0, 0.5, 0.0, 0.0, 0.0]]])
    out = psa_random_walk(scores, edge, radius=3, beta=8.0, logt=6)
    assert out[1, 0, 2:].abs().max().item() == 0.0
    assert out[1, 0, :2].sum().item() == pytest.approx(1.5, rel=1e-5)
    assert torch.allclose(out[0], scores[0])


def test_mask_decision_by_hand():
    """A 4 x 8 image, one class (id 3) on its left half, boundary 0 / 0.5 between its two stride-4
    cells: the walked class [2/3, 1/3] is upsampled bilinearly (pixel x samples cell position
    (x + 0.5) / 4 - 0.5) and beats the constant 0.39 up to x = 4 (0.458), not from x = 5 (0.375)."""
    planes = np.zeros((1, 4, 8), np.float32)
    planes[:, :, :4] = 1.0
    mask = psa_mask(planes, [3], torch.tensor([[0.0, 0.5]]), WALK)
    assert mask.dtype == np.uint8 and mask.shape == (4, 8)
    assert (mask[:, :5] == 3).all() and (mask[:, 5:] == 0).all()
    # PSA's alpha background instead: (1 - 1)^16 = 0 on the left, 1 on the right, walked alike
    mask = psa_mask(planes, [3], torch.tensor([[0.0, 0.5]]), {**WALK, "alpha": 16})
    assert (mask[:, :4] == 3).all() and (mask[:, 5:] == 0).all()


def test_walk_at_stride_8_keeps_the_image_size():
    rng = np.random.default_rng(0)
    planes = rng.random((2, 21, 13)).astype(np.float32)
    edge = torch.from_numpy(rng.random((math.ceil(21 / 4), math.ceil(13 / 4))).astype(np.float32))
    mask = psa_mask(planes, [2, 5], edge, {**WALK, "stride": 8, "radius": 5, "beta": 8, "logt": 6})
    assert mask.shape == (21, 13) and set(np.unique(mask)) <= {0, 2, 5}


def test_no_class_means_background():
    mask = walked_to_mask(np.full((1, 2, 2), 0.39, np.float32), [], (7, 5), 4)
    assert mask.shape == (7, 5) and not mask.any()
    with pytest.raises(ValueError, match="walked planes"):
        walked_to_mask(np.zeros((1, 2, 2), np.float32), [1], (7, 5), 4)


# ---- Config and DAG -------------------------------------------------------------------------
def _with_mctformer(refine: str = "random_walk") -> dict:
    from tests.conftest import preset_config

    cfg = preset_config(None)
    cfg["masks"]["methods"]["mctformer"] = {"source": "cam", "labels": "dual", "fg_threshold": 0.5,
                                            "bg_threshold": 0.15, "crf": "irn_label", "refine": refine}
    return cfg


def test_config_checks_name_the_psa_walk_keys():
    from pipeline.config_checks import check_config

    check_config(_with_mctformer())  # mctformer may train DeepLab on its random-walk masks
    cfg = _with_mctformer()
    cfg["irn"]["psa"]["stride"] = 6
    with pytest.raises(PipelineError, match=r"irn\.psa\.stride"):
        check_config(cfg)
    cfg = _with_mctformer()
    cfg["masks"]["methods"]["seco"]["refine"] = "random_walk"
    with pytest.raises(PipelineError, match=r"masks\.methods\.seco\.refine"):
        check_config(cfg)


def test_schema_names_the_psa_walk_keys(tmp_path):
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = _with_mctformer()
    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    cfg["irn"]["psa"]["logt"] = -1
    with pytest.raises(WorkflowError, match="logt"):
        validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert yaml.safe_load((REPO / "configs/voc12.yaml").read_text())["irn"]["psa"]["stride"] == 8


def test_dry_run_has_the_psa_walk_jobs_for_mctformer(tmp_path):
    extra = tmp_path / "mct.yaml"
    extra.write_text("masks:\n  methods:\n    mctformer: {source: cam, labels: dual, fg_threshold: 0.5, "
                     "bg_threshold: 0.15, crf: irn_label, refine: random_walk}\n")
    p = subprocess.run(["snakemake", "-n", "-p", "results/summary.tsv", "results/deeplab/mctformer/model_final.pth",
                        "--configfile", str(REPO / "configs/tiny.yaml"), str(extra), "--directory", str(tmp_path / "w")],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    # one walk job per method, mctformer's by PSA's recipe on its full-resolution maps
    assert "--method mctformer --recipe psa --model results/irn/mctformer/model_final.pth" in out
    assert "--cams results/cam/mctformer/cams.h5 --out results/masks/mctformer/rw.h5" in out
    assert "--method baseline --recipe irn" in out
    # its boundary network reads the ResNet CAM baseline's frozen backbone and mctformer's CRF masks
    assert "--ir-labels results/masks/mctformer/crf.h5 --cam-model results/cam/baseline/model_final.pth" in out
    assert "--rw results/masks/mctformer/rw.h5 --summary results/masks/mctformer/eval_rw.json" in out
    # DeepLab trains on the random-walk masks
    assert "--method mctformer --masks results/masks/mctformer/rw.h5" in out
