"""Cross-field config rules fail when the DAG is built, naming the key (and pass on the defaults)."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from pipeline.config_checks import check_config
from pipeline.errors import PipelineError
from tests.conftest import REPO, tool_env, workdir

DEFAULTS = yaml.safe_load((REPO / "config.yaml").read_text())


def _with(path: str, value):
    cfg = copy.deepcopy(DEFAULTS)
    *parents, leaf = path.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[leaf] = value
    return cfg


def test_defaults_pass():
    check_config(DEFAULTS)


@pytest.mark.parametrize("path,value,key", [
    ("seco.low", 0.9, "seco.low"),
    ("masks.methods.baseline.bg_threshold", 0.5, "masks.methods.baseline.bg_threshold"),
    ("masks.methods.csd.crf", "nope", "masks.methods.csd.crf"),
    ("masks.methods.baseline.crf", "nope", "masks.methods.baseline.crf"),
    ("crf.predictions", "nope", "crf.predictions"),
    ("eval_cam.sweep", [], "eval_cam.sweep"),
    ("cam.crop_size", 72, "cam.crop_size"),
    ("seco.local_crop_size", 96, "seco.local_crop_size"),
])
def test_cross_field_errors_name_the_key(path, value, key):
    with pytest.raises(PipelineError, match=key.replace(".", r"\.")):
        check_config(_with(path, value))


def test_dry_run_fails_on_a_cross_field_error(tmp_path):
    work = workdir(tmp_path)
    (work / "bad.yaml").write_text("crf:\n  predictions: nope\n")
    p = subprocess.run(["snakemake", "-n", "--configfile", str(work / "bad.yaml"), "--directory", str(work)],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode != 0 and "crf.predictions" in p.stdout + p.stderr
