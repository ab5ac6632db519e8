"""Cluster resources follow the preset: one CPU per loader worker plus one, time from iterations."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO, tool_env


def _job_resources(tmp_path, preset: str) -> dict[str, dict[str, int]]:
    p = subprocess.run(["snakemake", "-n", "--directory", str(tmp_path), "--configfile", str(REPO / preset)],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stderr[-2000:]
    out: dict[str, dict[str, int]] = {}
    # group members are printed indented under their group job
    for block in re.split(r"\n(?=\s*rule )", p.stdout):
        name = re.match(r"\s*rule (\w+):", block)
        res = re.search(r"resources: (.*)", block)
        if name and res:
            out[name.group(1)] = {k: int(v) for k, v in re.findall(r"(runtime|cpus_per_task|gpu)=(\d+)", res.group(1))}
    return out


def test_coco_resources_follow_workers_and_iterations(tmp_path):
    res = _job_resources(tmp_path, "configs/coco14.yaml")
    assert res["train_seco"]["cpus_per_task"] == 11 and res["train_cam"]["cpus_per_task"] == 9  # 10 / 8 workers
    assert res["train_deeplab"]["runtime"] > 24 * 60  # 100k iterations x iter_size 2
    assert res["train_seco"]["runtime"] > res["train_cam"]["runtime"]
    voc = _job_resources(tmp_path, "configs/voc12.yaml")
    assert voc["train_deeplab"]["runtime"] < res["train_deeplab"]["runtime"]  # 20k iterations
    assert all(r["gpu"] == 1 for name, r in res.items() if name.startswith(("train_", "infer_", "make_cam")))
