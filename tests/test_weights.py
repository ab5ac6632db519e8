"""The weights command lists what a preset reads, and the format it saves loads through timm."""

from __future__ import annotations

import subprocess
import sys

import torch
from safetensors.torch import save_file

from pipeline.backbones import create_backbone
from pipeline.weights import expected_weights
from tests.conftest import REPO, preset_config, tool_env


def test_voc_preset_lists_its_three_weight_files():
    wanted = {key: (name, str(path)) for key, name, path in expected_weights(preset_config(REPO / "configs/voc12.yaml"))}
    assert wanted == {
        "cam.pretrained": ("resnet50.a1_in1k", "weights/resnet50.a1_in1k.safetensors"),
        "seco.pretrained": ("vit_base_patch16_224.orig_in21k_ft_in1k",
                            "weights/vit_base_patch16_224.orig_in21k_ft_in1k.safetensors"),
        "deeplab.pretrained": ("resnet101.tv_in1k", "weights/resnet101.tv_in1k.safetensors"),
        "irn.pretrained": ("resnet50.a1_in1k", "weights/resnet50.a1_in1k.safetensors"),  # IRN's frozen backbone
        "mctformer.pretrained": ("deit_small_patch16_224.fb_in1k", "weights/deit_small_patch16_224.fb_in1k.safetensors"),
    }
    assert expected_weights(preset_config(None)) == []


def test_readme_weights_command_lists_without_network(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pipeline.weights", "--configfile", str(REPO / "configs/coco14.yaml")],
                       capture_output=True, text=True, cwd=tmp_path, env=tool_env())
    assert p.returncode == 0, p.stderr
    assert "resnet50.a1_in1k" in p.stdout and "(missing)" in p.stdout


def test_saved_state_dict_loads_through_timm(tmp_path):
    """The file --download writes (a timm model's state dict as safetensors) is what the presets'
    `pretrained: <file>` path loads."""
    torch.manual_seed(0)
    source = create_backbone("resnet18", None)
    path = tmp_path / "resnet18.test.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_backbone("resnet18", str(path), key="cam.pretrained", features_only=True, out_indices=(4,))
    ref = source.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items() if k in ref)
    assert torch.equal(loaded.state_dict()["layer4.1.conv2.weight"], ref["layer4.1.conv2.weight"])
