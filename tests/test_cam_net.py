"""IRN's CAM network on a timm ResNet, the weight factory, CAM inference helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.backbones import create_backbone
from pipeline.errors import PipelineError
from pipeline.irn.cams import multiscale_cam, scores_to_label, strided_size
from pipeline.irn.model import CAMNet
from pipeline.irn.train import build_sgd


def test_irn_freezing_and_stride():
    torch.manual_seed(0)
    net = CAMNet(5, "resnet18", frozen_bn=True, detach_stage=2)
    net.train()
    assert not any(m.training for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not net.backbone.conv1.weight.requires_grad
    x = torch.randn(2, 3, 64, 64)
    assert net.cam(x).shape == (2, 5, 4, 4)  # output stride 16
    net(x).sum().backward()
    assert net.backbone.layer2[0].conv1.weight.grad is None  # stage-2 output detached
    assert net.backbone.layer3[0].conv1.weight.grad is not None
    assert net.classifier.bias is None


def test_optimizer_uses_configured_momentum_and_lr_mult():
    net = CAMNet(3, "resnet18", frozen_bn=False, detach_stage=0)
    cam = {"lr": 0.1, "classifier_lr_mult": 10, "weight_decay": 1e-4, "momentum": 1e-4, "poly_power": 0.9}
    opt, sched = build_sgd(net, cam, max_iters=10)
    assert [g["lr"] for g in opt.param_groups] == [0.1, pytest.approx(1.0)]
    assert opt.defaults["momentum"] == 1e-4
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**0.9)


def test_backbone_weights_from_local_file(tmp_path):
    torch.manual_seed(1)
    src = create_backbone("resnet18", None, num_classes=7)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    loaded = create_backbone("resnet18", str(path), features_only=True, out_indices=(4,), output_stride=16)
    assert torch.equal(loaded.conv1.weight, src.conv1.weight)
    with pytest.raises(PipelineError, match="cam.pretrained"):
        create_backbone("resnet18", str(tmp_path / "missing.pth"), key="cam.pretrained")


def test_multiscale_cam_normalised_per_class():
    torch.manual_seed(0)
    net = CAMNet(4, "resnet18", frozen_bn=False, detach_stage=0).eval()
    img = np.random.default_rng(0).integers(0, 255, (37, 50, 3), dtype=np.uint8)
    cams = multiscale_cam(net, img, [2, 4], [1.0, 0.5], stride=4)
    assert cams.shape == (2, *strided_size((37, 50), 4)) == (2, 10, 13)
    assert np.all(cams >= 0) and np.allclose(cams.max((1, 2)), 1, atol=1e-3)


def test_scores_to_label():
    scores = np.array([[[0.9, 0.1]], [[0.2, 0.05]]], np.float32)
    assert scores_to_label(scores, [3, 8], 0.15).tolist() == [[3, 0]]
    assert scores_to_label(np.zeros((0, 1, 2), np.float32), [], 0.15).tolist() == [[0, 0]]
