"""The tiny DAG's CAM stages through a real SLURM via `snakemake --profile profiles/slurm`.

Runs the README's SLURM benchmark command (`python -m pipeline.bench.slurm`): it starts a
single-node SLURM on 127.0.0.1 with 4 fake GPUs (installing Debian's packages if needed), runs the
CAM stages of the instant-test config locally and through SLURM in fresh run directories, times
the plugin's import-time probes, and stops every daemon it started. The test checks that the CAM
classifier's training and CAM inference went through sbatch as one group job with a GPU request,
that the quick rules stayed local and that nothing of the test cluster stays configured; the
wall-time ratio is recorded, not asserted. Run alone with `pytest -m slurm`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_CONFIG, tool_env

pytestmark = pytest.mark.slurm

# train_cam and make_cam form group `cam_model` (one sbatch job); index_dataset is a local rule
GPU_JOBS = {"group cam_model (make_cam, train_cam)"}


def test_tiny_dag_through_slurm(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the SLURM integration test needs root to install and start slurmctld/slurmd/munged")
    out = tmp_path / "slurm.json"
    p = subprocess.run(["python", "-m", "pipeline.bench.slurm", "--out", str(out), "--preset", str(TINY_CONFIG),
                        "--workdir", str(tmp_path), "--repeats", "1"],
                       capture_output=True, text=True, cwd=REPO, env=tool_env(), timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    figures = json.loads(out.read_text())
    by_rule: dict[str, list[dict]] = {}
    for job in figures["jobs"]:
        by_rule.setdefault(job["rule"], []).append(job)
    assert set(by_rule) == GPU_JOBS, f"expected one group job for the CAM chain, got {sorted(by_rule)}"
    assert figures["sbatch_jobs"] == 1
    for job in by_rule["group cam_model (make_cam, train_cam)"]:
        assert "gpu" in job["gres"], f"the CAM group was submitted without a GPU request: {job}"
        assert job["state"] == "COMPLETED"
    # Nothing of the test's cluster stays configured: a client config naming the stopped
    # controller makes every later Snakemake process wait in the plugin's import-time probes.
    conf = Path("/etc/slurm/slurm.conf")
    assert not conf.exists() or "wsss-test" not in conf.read_text()
    assert figures["probe"]["controller not answering"]["plugin_import_s"] > 0
    # The wall ratio is recorded (docs/BENCHMARKS.md, "SLURM against local"), not asserted: on the
    # tiny DAG each sbatch job's fixed cost (scheduling, the job step's workflow parse, the
    # plugin's backing-off status polls) is of the order of its seconds of work.
    assert figures["local_s"] > 0 and figures["ratio"] > 0
    print(f"local {figures['local_s']:.0f} s, SLURM {figures['slurm_s']:.0f} s ({figures['sbatch_jobs']} sbatch jobs)")
