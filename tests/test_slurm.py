"""The tiny DAG through a real SLURM via `snakemake --profile profiles/slurm`.

Starts a single-node SLURM on 127.0.0.1 with 4 fake GPUs (installing Debian's packages if
needed), runs the CAM stages of the instant-test config, and checks that the GPU rules were
submitted with sbatch and a GPU request. Every daemon the test started is stopped by PID,
also when the test fails. Run alone with `pytest -m slurm`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.conftest import REPO, TINY_CONFIG, tool_env, workdir
from tests.slurm_cluster import LocalSlurm

pytestmark = pytest.mark.slurm

TARGETS = ["results/cam/baseline/eval_cam.json", "results/tags/baseline/tag_accuracy.json"]
GPU_RULES = {"train_cam", "make_cam"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the SLURM integration test needs root to install and start slurmctld/slurmd/munged")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_tiny_dag_through_slurm(slurm, tmp_path):
    work = workdir(tmp_path / "work")
    cfg = TINY_CONFIG
    env = dict(tool_env(), **slurm.env())
    t0 = time.monotonic()
    p = subprocess.run(
        ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles/slurm"),
         "--directory", str(work), "--configfile", str(cfg),
         # Test-only settings: the test partition, no account (the profile's squeue status works
         # without the accounting DB),
         # and faster polling than a real cluster needs.
         "--default-resources", "slurm_partition=debug", "mem_mb=2000", "--slurm-no-account",
         "--slurm-init-seconds-before-status-checks", "2",
         "--seconds-between-status-checks", "3", "--jobs", "4", *TARGETS],
        capture_output=True, text=True, cwd=work, env=env, timeout=900,
    )
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    for target in TARGETS:
        assert (work / target).exists(), target
    summary = json.loads((work / TARGETS[0]).read_text())
    assert summary["miou"] > 0

    jobs = slurm.jobs()
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        rule = next((r for r in ("make_synthetic", "index_dataset", "train_cam", "make_cam", "eval_cam", "tag_patches")
                     if r in job.get("Comment", "") + job.get("JobName", "")), None)
        if rule:
            by_rule.setdefault(rule, []).append(job)
    assert GPU_RULES <= set(by_rule), f"GPU rules not submitted via sbatch: {sorted(by_rule)}"
    assert not {"eval_cam", "tag_patches"} & set(by_rule), "seconds-long jobs are localrules, not sbatch jobs"
    for rule in GPU_RULES:
        for job in by_rule[rule]:
            requested = job.get("TresPerJob", "") + job.get("TRES", "")
            assert "gpu" in requested, f"{rule} was submitted without a GPU request: {job}"
            assert job["JobState"] == "COMPLETED"
    for rule in set(by_rule) - GPU_RULES:
        assert all("gpu" not in j.get("TresPerJob", "") for j in by_rule[rule]), rule
    print(f"SLURM DAG: {len(jobs)} jobs in {elapsed:.0f} s")
