"""DeepLab: shapes at output stride 8 and 16, MSC, multi-scale inference, optimiser groups, the GT
ceiling's masks and ratio, and a short real training + inference run of the stages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.data import open_dataset
from pipeline.deeplab.data import MaskSource
from pipeline.deeplab.model import MSC, DeepLab, multiscale_logits, output_size
from pipeline.deeplab.train import build_optimizer, class_weights, seg_loss
from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactReader
from pipeline.runtime.checkpoint import load_final
from pipeline.stages.infer_deeplab import main as infer_main
from pipeline.stages.summarize import build_summary
from pipeline.stages.train_deeplab import main as train_main
from tests.masks_helpers import default_sections, tiny_cfg, write_index

C = 11


@pytest.mark.parametrize("stride", [8, 16])
def test_v2_logits_at_output_stride(stride):
    net = DeepLab(C, arch="v2", backbone="resnet18", output_stride=stride, frozen_bn=False).eval()
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        y = net(x)
    assert net.stride == stride
    assert y.shape == (2, C, math.ceil(65 / stride), math.ceil(97 / stride)) == (2, C, *output_size((65, 97), stride))


@pytest.mark.parametrize("stride", [8, 16])
def test_v3plus_decodes_to_stride_4(stride):
    net = DeepLab(C, arch="v3plus", backbone="resnet18", output_stride=stride, aspp_rates=(6, 12, 18),
                  frozen_bn=False).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 64, 80))
    assert net.stride == 4 and y.shape == (2, C, 16, 20)


def test_v2_aspp_is_four_atrous_branches_summed():
    net = DeepLab(C, arch="v2", backbone="resnet18", output_stride=8, frozen_bn=False)
    dil = [b.dilation[0] for b in net.head.branches]
    assert dil == [6, 12, 18, 24] and all(b.out_channels == C for b in net.head.branches)
    backbone, weights, biases = net.param_groups()
    assert {id(p) for p in biases} == {id(b.bias) for b in net.head.branches}
    assert len(backbone) + len(weights) + len(biases) == len([p for p in net.parameters() if p.requires_grad])


def test_frozen_bn_stays_frozen_in_train_mode():
    net = DeepLab(C, arch="v2", backbone="resnet18", output_stride=16, frozen_bn=True).train()
    bns = [m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad for m in bns)


def test_msc_returns_each_scale_and_the_max():
    net = DeepLab(C, arch="v2", backbone="resnet18", output_stride=8, frozen_bn=False).eval()
    msc = MSC(net, (0.5, 0.75))
    with torch.no_grad():
        outs = msc(torch.randn(1, 3, 64, 64))
    assert len(outs) == 4 and outs[0].shape == outs[-1].shape == (1, C, 8, 8)
    assert torch.all(outs[-1] >= outs[0])
    y = torch.randint(0, C, (1, 64, 64))
    y[0, :5] = 255
    for loss_at in ("logits", "input"):
        assert all(torch.isfinite(seg_loss(o, y, loss_at)) for o in outs)


def test_multiscale_inference_fuses_on_the_scale1_grid():
    torch.manual_seed(0)
    net = DeepLab(C, arch="v2", backbone="resnet18", output_stride=8, frozen_bn=False).eval()
    x = torch.randn(1, 3, 50, 70)
    single = multiscale_logits(net, x, [1.0], flip=False)
    fused = multiscale_logits(net, x, [0.5, 0.75, 1.0], flip=True)
    assert single.shape == fused.shape == (C, 7, 9)
    assert torch.all(fused >= single - 1e-5)


def test_poly_schedule_steps_every_poly_step():
    net = DeepLab(C, arch="v2", backbone="resnet18", output_stride=16, frozen_bn=False)
    dl = {**default_sections("deeplab")["deeplab"], "lr": 1.0, "poly_step": 10, "head_lr_mult": 10,
          "head_bias_lr_mult": 20}
    opt, sched = build_optimizer(net, dl, 100)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 10.0, 20.0]
    assert opt.param_groups[2]["weight_decay"] == 0.0
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[9] == 1.0 and lrs[10] == lrs[19] == pytest.approx(0.9**0.9) and lrs[20] < lrs[19]


def test_ceiling_trains_on_ground_truth(tiny_synthetic):
    ds = open_dataset(tiny_cfg(tiny_synthetic)["dataset"])
    image_id = ds.ids("train")[0]
    assert np.array_equal(MaskSource(ds, "gt", None)(image_id), ds.mask(image_id))
    with pytest.raises(PipelineError, match="needs --masks"):
        MaskSource(ds, "baseline", None)


def _final(val_raw: float, val_crf: float) -> dict:
    return {"val": {"raw": {"miou": val_raw, "per_class_iou": {"background": val_raw}},
                    "crf": {"miou": val_crf, "per_class_iou": {"background": val_crf},
                            "cooccurrence_confusion_mean": 0.1}}}


def test_ceiling_row_divides_every_method():
    seed = {"miou": 0.3, "per_class_iou": {"background": 0.5}, "cooccurrence_confusion_mean": 1.0}
    masks = {"raw": {"miou": 0.35}, "crf": {"miou": 0.4, "uncertain_fraction": 0.1}}
    s = build_summary(["baseline"], [seed], [masks], [_final(0.30, 0.33)], "gt", _final(0.55, 0.60))
    rows = {r["method"]: r for r in s["rows"]}
    assert rows["gt"]["ratio_to_ceiling"] == 1.0 and rows["gt"]["seed_miou"] is None
    assert rows["baseline"]["ratio_to_ceiling"] == pytest.approx(0.33 / 0.60)
    assert rows["baseline"]["ratio_to_ceiling_raw"] == pytest.approx(0.30 / 0.55)
    assert rows["baseline"]["mask_crf_miou"] == 0.4 and s["rows"][-1]["method"] == "gt"


def test_train_and_infer_stages_on_gt(tiny_synthetic, tmp_path):
    """A few real iterations on CPU: the final model loads, inference covers val + decoupled +
    the qualitative images, and the same seed gives the same weights twice."""
    cfg = tiny_cfg(tiny_synthetic)
    cfg.update(default_sections("deeplab", "report"))
    cfg["deeplab"].update(iterations=3, batch_size=2, crop_size=48, ckpt_every=2, test_scales=[1.0])
    cfg["report"]["qualitative_images"] = 2
    cfg["runtime"]["device"] = "cpu"
    index = write_index(cfg, tmp_path / "index.json")
    models = []
    for run in ("a", "b"):
        out = tmp_path / run / "model.pth"
        train_main(["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--method", "gt",
                    "--threads", "1", "--out", str(out), "--ckpt-dir", str(tmp_path / run / "ck"),
                    "--metrics", str(tmp_path / run / "m.csv")])
        models.append(load_final(out))
    (wa, meta), (wb, _) = models
    assert meta["method"] == "gt" and meta["stride"] == 8
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    infer_main(["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--threads", "1",
                "--model", str(tmp_path / "a" / "model.pth"), "--out", str(tmp_path / "logits.h5")])
    logits = ArtifactReader(tmp_path / "logits.h5", expect="logits")
    expected = set(index["splits"]["val"]["ids"]) | set(index["splits"]["decoupled"]["ids"])
    assert expected < set(logits.ids()) and len(logits) == len(expected) + 2
    planes, classes = logits.scores(index["splits"]["val"]["ids"][0])
    assert list(classes) == list(range(C)) and planes.shape[1:] == tuple(index["splits"]["val"]["sizes"][
        index["splits"]["val"]["ids"][0]])
    # two ranks split the images and rank 0 merges their shards: the same artifact, no shard left
    infer_main(["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--threads", "1", "--gpus", "2",
                "--model", str(tmp_path / "a" / "model.pth"), "--out", str(tmp_path / "ddp.h5")])
    merged = ArtifactReader(tmp_path / "ddp.h5", expect="logits")
    assert sorted(merged.ids()) == sorted(logits.ids())
    for image_id in logits.ids():
        np.testing.assert_allclose(merged.scores(image_id)[0], logits.scores(image_id)[0], atol=1e-5)
    assert not list(tmp_path.glob("ddp.shard*"))


def _train_cfg(tiny_synthetic, **deeplab) -> dict:
    cfg = tiny_cfg(tiny_synthetic)
    cfg.update(default_sections("deeplab", "report"))
    cfg["deeplab"].update(batch_size=2, crop_size=40, test_scales=[1.0], **deeplab)
    cfg["runtime"]["device"] = "cpu"
    return cfg


def test_killed_training_resumes_to_the_same_weights(tiny_synthetic, tmp_path):
    """Drop the newest checkpoint (as if killed before it was written): the rerun resumes from the
    previous one and ends bit-identical to the uninterrupted run."""
    cfg = _train_cfg(tiny_synthetic, iterations=4, ckpt_every=2, iter_size=2, msc_scales=[0.75])
    write_index(cfg, tmp_path / "index.json")
    args = ["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--method", "gt", "--threads", "1",
            "--ckpt-dir", str(tmp_path / "ck"), "--metrics", str(tmp_path / "m.csv")]
    train_main([*args, "--out", str(tmp_path / "full.pth")])
    (tmp_path / "ck" / "last.pth").unlink()  # prev.pth holds iteration 1
    (tmp_path / "ck" / "complete").unlink()  # as if killed before the final model was written
    train_main([*args, "--out", str(tmp_path / "resumed.pth")])
    a, _ = load_final(tmp_path / "full.pth")
    b, _ = load_final(tmp_path / "resumed.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[-1].startswith("3,")


def test_ddp_training_on_two_cpu_processes(tiny_synthetic, tmp_path):
    cfg = _train_cfg(tiny_synthetic, iterations=2, ckpt_every=2, iter_size=2)  # no_sync on the first batch
    write_index(cfg, tmp_path / "index.json")
    train_main(["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--method", "gt", "--gpus", "2",
                "--threads", "1",
                "--out", str(tmp_path / "ddp.pth"), "--ckpt-dir", str(tmp_path / "ck"),
                "--metrics", str(tmp_path / "m.csv")])
    state, meta = load_final(tmp_path / "ddp.pth")
    assert meta["iterations"] == 2 and not any(k.startswith(("module.", "base.")) for k in state)


def test_v3plus_option_trains_through_the_stage(tiny_synthetic, tmp_path):
    cfg = _train_cfg(tiny_synthetic, arch="v3plus", output_stride=16, aspp_rates=[6, 12, 18], iterations=1,
                     ckpt_every=1)
    write_index(cfg, tmp_path / "index.json")
    train_main(["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--method", "gt", "--threads", "1",
                "--out", str(tmp_path / "v3p.pth"), "--ckpt-dir", str(tmp_path / "ck"),
                "--metrics", str(tmp_path / "m.csv")])
    state, meta = load_final(tmp_path / "v3p.pth")
    assert meta["stride"] == 4 and any(k.startswith("head.aspp.") for k in state)


def test_class_balance_weights_rare_classes_and_zero_is_plain_cross_entropy():
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[0, :2, :2] = 3            # 4 of 128 pixels
    y[1, :, :4] = 1             # 32 pixels
    y[1, 0, 0] = 255            # ignored: not counted
    w = class_weights(y, C, 1.0)
    counts = {0: 92, 1: 31, 3: 4}
    inv = {c: 127 / n for c, n in counts.items()}
    mean = sum(inv.values()) / 3
    for c, v in inv.items():
        assert w[c].item() == pytest.approx(v / mean, rel=1e-5)
    assert w[2].item() == 1.0 and torch.equal(class_weights(y, C, 0.0), torch.ones(C))
    torch.manual_seed(0)
    logits = torch.randn(2, C, 8, 8)
    plain = F.cross_entropy(logits, y, ignore_index=255)
    assert seg_loss(logits, y, "input", 0.0).item() == pytest.approx(plain.item())
    # the rare class's pixels dominate once balanced: mislabel only them and the loss grows more
    confident = torch.full((2, C, 8, 8), -10.0).scatter(1, y.clamp(max=C - 1)[:, None], 10.0)
    wrong_rare = confident.clone()
    wrong_rare[0, :, :2, :2] = confident[0, :, 4:6, 4:6]
    assert seg_loss(wrong_rare, y, "input", 1.0) > 5 * seg_loss(wrong_rare, y, "input", 0.0)
