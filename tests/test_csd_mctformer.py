"""CSD on MCTformer-V2 (method `mctformer_csd`): the adapter hands CSD's losses maps of the right
shape, the source prior runs in eval mode without gradient and restores the mode, the BG loss
reaches only the attention (PatchCAM detached), one training step through the stage writes a
model make_cam_mctformer reads, the config checks name their keys, and the DAG holds both
MCTformer rows."""

from __future__ import annotations

import copy
import json
import subprocess

import numpy as np
import pytest
import torch

from pipeline.config_checks import check_config
from pipeline.csd.adapter import csd_step_loss, source_prior
from pipeline.csd.losses import csd_losses
from pipeline.csd.mctformer import MCTformerMaps, effective_csd
from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactWriter
from pipeline.mctformer.cams import refined_maps
from pipeline.mctformer.model import MCTformerV2
from tests.conftest import REPO, preset_config, tiny_config, tool_env
from tests.masks_helpers import tiny_cfg, write_index

KW = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 32}
C = 4
B = 2
MCT_RECIPE = {"source": "cam", "labels": "dual", "fg_threshold": 0.5, "bg_threshold": 0.15, "crf": "irn_label",
              "refine": "crf"}


def _net(seed: int = 0) -> MCTformerV2:
    torch.manual_seed(seed)
    return MCTformerV2(C, "vit_tiny_patch16_224", None, KW, drop_path_rate=0.0)


def _pairs(seed: int = 0) -> dict:
    """A paste-pair batch as PastePairDataset collates it: 32 x 32 crops (a 4 x 4 patch grid)."""
    g = torch.Generator().manual_seed(seed)
    fg_region = torch.zeros(B, 32, 32, dtype=torch.bool)
    fg_region[:, :16, :16] = True  # the top-left 2 x 2 patches hold the pasted object
    bg_region = torch.zeros(B, 32, 32, dtype=torch.bool)
    bg_region[:, 16:, :] = True
    labels = torch.zeros(B, C)
    labels[:, 1] = 1
    fg_label = labels.clone()
    fg_label[:, 2] = 1
    return {"source": torch.randn(B, 3, 32, 32, generator=g), "fg_image": torch.randn(B, 3, 32, 32, generator=g),
            "bg_image": torch.randn(B, 3, 32, 32, generator=g), "paste_class": torch.tensor([2, 2]),
            "source_label": torch.eye(C)[[2, 2]], "fg_label": fg_label, "bg_label": labels,
            "fg_region": fg_region, "bg_region": bg_region}


def _csd(**over) -> dict:
    cfg = tiny_config()
    cfg["csd"]["fg_confidence"] = 0.0  # every pasted cell counts, so the FG term is not empty
    cfg["mctformer_csd"].update(over)
    return effective_csd(cfg)


def test_adapter_gives_the_csd_losses_patch_grid_maps():
    net = _net().train()
    adapter = MCTformerMaps(net, layers=12)
    p = _pairs()
    out, (fg, bg) = adapter(torch.randn(B, 3, 32, 32), p["fg_image"], p["bg_image"])
    assert out.cls_logits.shape == (B, C) and out.attn is None  # the classification batch: no attention
    for maps in (fg.fg_maps, fg.bg_maps, bg.fg_maps, bg.bg_maps):
        assert maps.shape == (B, C, 4, 4)
    source = source_prior(adapter, p["source"], torch.device("cpu"), "off")
    assert source.shape == (B, C, 4, 4)
    terms = csd_losses(source, fg.fg_maps.float(), bg.bg_maps.float(), p, _csd())
    assert terms["fg"].ndim == 0 and terms["bg"].ndim == 0
    assert torch.isfinite(terms["fg"]) and torch.isfinite(terms["bg"]) and terms["fg_cells"] > 0
    # the source prior is MCTformer's own refined map (make_cam_mctformer's, before upsampling), raw scale
    net.eval()
    with torch.no_grad():
        expected = refined_maps(net, p["source"], 12, patch_refine=True)
    assert torch.allclose(source, expected, atol=1e-6)


def test_source_prior_runs_in_eval_mode_without_gradient_and_restores_the_mode():
    net = _net().train()
    adapter = MCTformerMaps(net, layers=12)
    seen = {}
    original = adapter.source_maps

    def spy(x):
        seen.update(training=net.training, grad=torch.is_grad_enabled(),
                    dropout_modes={m.training for m in net.modules()})
        return original(x)

    adapter.source_maps = spy
    prior = source_prior(adapter, torch.randn(B, 3, 32, 32), torch.device("cpu"), "off")
    assert seen == {"training": False, "grad": False, "dropout_modes": {False}}
    assert not prior.requires_grad and prior.dtype == torch.float32
    assert net.training and all(m.training for m in net.modules())  # back in train mode
    net.eval()
    source_prior(adapter, torch.randn(B, 3, 32, 32), torch.device("cpu"), "off")
    assert not net.training  # a network in eval mode stays there


def _grads(loss: torch.Tensor, net: MCTformerV2) -> tuple[float, float]:
    net.zero_grad(set_to_none=True)
    loss.backward()
    head = net.head.weight.grad
    qkv = net.vit.blocks[0].attn.qkv.weight.grad
    return (0.0 if head is None else head.abs().sum().item()), (0.0 if qkv is None else qkv.abs().sum().item())


@pytest.mark.parametrize("fg_patch_cam", ["detached", "trained"])
def test_bg_loss_reaches_only_the_attention_and_fg_follows_its_switch(fg_patch_cam):
    net = _net().train()
    adapter = MCTformerMaps(net, layers=12, fg_patch_cam=fg_patch_cam)
    p, csd = _pairs(), _csd(fg_patch_cam=fg_patch_cam)
    source = source_prior(adapter, p["source"], torch.device("cpu"), "off")
    _, (fg, bg) = adapter(torch.randn(B, 3, 32, 32), p["fg_image"], p["bg_image"])
    terms = csd_losses(source, fg.fg_maps, bg.bg_maps, p, csd)
    head, qkv = _grads(terms["bg"], net)
    assert head == 0.0 and qkv > 0  # the PatchCAM is detached for the BG loss
    _, (fg, bg) = adapter(torch.randn(B, 3, 32, 32), p["fg_image"], p["bg_image"])
    terms = csd_losses(source, fg.fg_maps, bg.bg_maps, p, csd)
    head, qkv = _grads(terms["fg"], net)
    assert qkv > 0 and (head > 0) == (fg_patch_cam == "trained")


def test_one_csd_step_trains_the_network():
    net = _net().train()
    adapter = MCTformerMaps(net, layers=12)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    y = torch.zeros(B, C)
    y[:, 0] = 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss, cls, logs = csd_step_loss(adapter, adapter, torch.randn(B, 3, 32, 32), y, _pairs(), _csd(),
                                    torch.device("cpu"), "off")
    assert {"cls_loss", "patch_loss", "fg", "bg", "fg_cells", "bg_cells"} <= set(logs)
    # lambda_fg = lambda_bg = 1; a single channel's KL term may be negative
    assert loss.item() == pytest.approx(cls.item() + logs["fg"] + logs["bg"], rel=1e-5) and net.training
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_stage_trains_one_step_and_writes_a_model_make_cam_mctformer_reads(tiny_synthetic, tmp_path):
    from pipeline.data import open_dataset
    from pipeline.runtime.checkpoint import load_final
    from pipeline.stages.make_cam_mctformer import main as make_cam_main
    from pipeline.stages.train_mctformer_csd import main as train_main

    cfg = tiny_cfg(tiny_synthetic)
    cfg["mctformer"] = {**cfg["mctformer"], "backbone_kwargs": {**KW, "img_size": 64}, "crop_size": 64,
                        "resize_long": [56, 80], "batch_size": 40, "epochs": 1, "warmup_epochs": 0, "ckpt_every": 5}
    cfg["csd"]["paste_batch"] = 2
    cfg["masks"]["methods"]["mctformer"] = MCT_RECIPE
    index = tmp_path / "index.json"
    idx = write_index(cfg, index)
    ds = open_dataset(cfg["dataset"])
    masks = tmp_path / "crf.h5"  # round 1: MCTformer's CRF masks (the GT stands in for them)
    with ArtifactWriter(masks, "mask", ds.class_names, {}) as w:
        for image_id in idx["splits"]["train"]["ids"]:
            w.write_mask(image_id, ds.mask(image_id))
    sub = {k: cfg[k] for k in ("seed", "dataset", "runtime", "mctformer", "csd", "mctformer_csd")}
    sub["masks"] = {"methods": {"mctformer": MCT_RECIPE}}
    model = tmp_path / "model_final.pth"
    train_main(["--cfg", json.dumps(sub), "--index", str(index), "--threads", "2", "--source-masks", str(masks),
                "--out", str(model), "--ckpt-dir", str(tmp_path / "runs"), "--metrics", str(tmp_path / "metrics.csv")])
    state, meta = load_final(model)
    assert meta["iterations"] == 1 and meta["csd"]["bg_maps"] == "raw" and "cls_tokens" in state
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"loss", "cls", "cls_loss", "patch_loss", "fg", "bg", "fg_cells", "bg_cells"} <= set(header)
    assert len(rows) == 2 and np.isfinite(float(rows[1].split(",")[header.index("loss")]))
    out = tmp_path / "cams.h5"
    make_cam_main(["--cfg", json.dumps({k: sub[k] for k in ("seed", "dataset", "runtime", "mctformer")}),
                   "--index", str(index), "--threads", "2", "--model", str(model), "--out", str(out)])
    assert out.exists()


def test_config_checks_name_the_keys():
    cfg = tiny_config()
    cfg["masks"]["methods"]["mctformer_csd"] = dict(MCT_RECIPE)
    with pytest.raises(PipelineError, match="masks.methods.mctformer:"):
        check_config(cfg)  # round 1 missing
    cfg["masks"]["methods"]["mctformer"] = dict(MCT_RECIPE)
    check_config(cfg)
    bad = copy.deepcopy(cfg)
    del bad["eval_cam"]["bg_threshold"]["mctformer_csd"]
    with pytest.raises(PipelineError, match="eval_cam.bg_threshold.mctformer_csd"):
        check_config(bad)
    bad = copy.deepcopy(cfg)
    bad["masks"]["methods"]["mctformer"] = {**MCT_RECIPE, "labels": "single", "threshold": 0.3}
    bad["mctformer_csd"]["source_masks"] = "cam_seeds"
    with pytest.raises(PipelineError, match="mctformer_csd.source_masks"):
        check_config(bad)
    for name in ("voc12", "coco14", "bench"):
        assert "mctformer_csd" in preset_config(REPO / "configs" / f"{name}.yaml")["masks"]["methods"]


def test_dry_run_holds_both_mctformer_rows(tmp_path):
    """The tiny preset with mctformer and mctformer_csd listed: CSD's round 2 reads mctformer's CRF
    masks, make_cam_mctformer writes both CAM caches, and the summary takes both rows."""
    extra = tmp_path / "mct.yaml"
    extra.write_text(json.dumps({"masks": {"methods": {"mctformer": MCT_RECIPE, "mctformer_csd": MCT_RECIPE}}}))
    p = subprocess.run(["snakemake", "-n", "-p", "--directory", str(tmp_path), "--configfile",
                        str(REPO / "configs/tiny.yaml"), str(extra)],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    text = p.stdout
    assert "rule train_mctformer_csd:" in text
    assert "--source-masks results/masks/mctformer/crf.h5" in text
    assert "results/cam/mctformer_csd/cams.h5" in text and "results/cam/mctformer/cams.h5" in text
    assert "results/deeplab/mctformer_csd/eval_deeplab.json" in text
    summarize = text[text.index("rule summarize:"):].split("\n\n")[0]
    for m in ("mctformer", "mctformer_csd"):
        for path in (f"results/cam/{m}/eval_cam.json", f"results/masks/{m}/eval_masks.json",
                     f"results/deeplab/{m}/eval_deeplab.json"):
            assert path in summarize, path


def test_per_model_choices_override_the_csd_constants():
    cfg = tiny_config()
    eff = effective_csd(cfg)
    assert eff["bg_maps"] == "raw" and cfg["csd"]["bg_maps"] == "max_normalized"  # raw scale for MCTformer
    assert eff["paste_batch"] == cfg["csd"]["paste_batch"]  # null: the csd section's
    voc = preset_config(REPO / "configs/voc12.yaml")
    assert effective_csd(voc)["paste_batch"] == voc["mctformer"]["batch_size"] == 64  # PSD_WSSS: one pair per sample


def test_benchmark_document_shows_both_mctformer_rows_and_compares_csd_with_its_round_one():
    from pipeline.bench.document import QUALITY, goals, quality_section

    def row(cooc):
        return {**{k: 0.3 for k, _ in QUALITY}, "cooc_seed": cooc, "cooc_val": cooc}

    rows = {"baseline": row(1.0), "csd": row(0.9), "mctformer": row(2.0), "mctformer_csd": row(1.2)}
    seed = {"quality": {"methods": list(rows), "rows": rows, "cooccurrence_confusion": {}}}
    figures = {"presets": {"bench": {"seeds": {"0": seed}}}, "preset_order": ["bench"]}
    text = "\n".join(quality_section("bench", figures["presets"]["bench"]))
    assert "| mctformer |" in text and "| mctformer_csd |" in text
    goal = {r[0]: r for r in goals(figures) if "co-occurrence" in r[0]}
    assert goal["mctformer_csd co-occurrence confusion ≤ 0.7 × mctformer's, final predictions (`bench`)"][1] == "×0.60 (seeds: ×0.60)"
    assert "csd co-occurrence confusion ≤ 0.7 × baseline's, final predictions (`bench`)" in goal
