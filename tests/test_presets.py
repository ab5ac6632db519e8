"""Presets hold only what differs from config.yaml, and resolve to the full configs they stood for.

tests/fixtures/resolved_presets/<name>.json is each preset as `snakemake --configfile` resolved it
before the presets were cut down to their differences (f055ccd), carried over to today's keys:
`tagging.{high, low, num_patches, bg_ratio}` -> `seco.{high, low, num_local_crops, tag_threshold}`
(equal values), `tagging.patch_size` -> `seco.offline_patch_size`, `tagging.bg_rule` dropped (one
switch: `seco.quirks.tag_bg_rule`), `csd.{fg,bg}_threshold` -> `masks.methods.baseline` and
`csd.{crop_size, resize_long, num_workers}` -> `cam.*` (equal values). One intended change:
`seco.backbone_kwargs: {}` did not clear the synthetic ViT's kwargs under Snakemake's nested
merge (the VOC/COCO presets built a 4-block ViT-B), so those presets now say `null`. Keys added
since: `masks.png` (default true), `eval.miou_convention` (default present), the `mctformer`
section with `eval_cam.bg_threshold.mctformer` and, in these three presets, `masks.methods.mctformer`.
IRN's random walk: the `irn` section and `masks.methods.{baseline,csd}.refine`; PSA's walk for
MCTformer: `irn.psa` and `masks.methods.mctformer.refine` (random_walk in voc12 and coco14). CSD on
MCTformer: the `mctformer_csd` section, `eval_cam.bg_threshold.mctformer_csd` and, in these three
presets, `masks.methods.mctformer_csd`. The `pretrain` section (configs/pretrained.yaml's pretraining;
unused by these presets); `deeplab.class_balance` (default 0, kazuto's plain loss).
"""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.config_checks import check_config
from tests.conftest import REPO, preset_config

FIXTURES = REPO / "tests/fixtures/resolved_presets"
DEFAULTS = yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["voc12", "coco14", "bench"])
def test_preset_resolves_to_the_same_full_config(name):
    resolved = preset_config(REPO / "configs" / f"{name}.yaml")
    assert resolved == json.loads((FIXTURES / f"{name}.json").read_text())


def _leaves(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@pytest.mark.parametrize("name", ["voc12", "coco14", "bench", "tiny", "pretrained"])
def test_preset_holds_only_differences(name):
    preset = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    for path, value in _leaves(preset):
        node = DEFAULTS
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        assert node != value, f"configs/{name}.yaml repeats the default {'.'.join(path)} = {value!r}"


@pytest.mark.parametrize("name", ["voc12", "coco14", "bench", "tiny", "pretrained"])
def test_preset_passes_the_dag_checks(name):
    check_config(preset_config(REPO / "configs" / f"{name}.yaml"))
