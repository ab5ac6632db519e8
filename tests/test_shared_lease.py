"""Two Unix users share one GPU lock folder on a workstation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runtime.lease import GpuLease

USER = "wsss_second_user"
# The lease is standard library only, so the other user runs it with the system Python (the
# project's interpreter may live under a home folder that user cannot enter).
PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable


@pytest.fixture(scope="module")
def second_user():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root, useradd and runuser to create a second Unix user")
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", USER], check=True)
    return USER


def _lease_as(user: str, lock_dir: Path, pool: str) -> subprocess.CompletedProcess:
    code = ("import sys; from pipeline.runtime.lease import GpuLease\n"
            f"with GpuLease(1, pool={pool.split(',')!r}, lock_dir={str(lock_dir)!r}, timeout=2, poll=0.05) as l:\n"
            "    print('leased', ','.join(l.ids))\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HOME": "/tmp"}
    return subprocess.run(["runuser", "-u", user, "--", PYTHON, "-c", code], capture_output=True,
                          text=True, env=env, cwd="/tmp")


def test_second_user_leases_from_the_same_folder(second_user, tmp_path_factory, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    base = Path("/tmp") / f"wsss-shared-{os.getpid()}"  # a path both users can reach
    lock_dir = base / "locks"
    try:
        with GpuLease(1, pool=["0", "1"], lock_dir=lock_dir) as mine:  # root creates folder and files
            assert mine.ids == ["0"]
            assert (lock_dir.stat().st_mode & 0o7777) == 0o1777
            p = _lease_as(second_user, lock_dir, "0,1")
            assert p.returncode == 0, p.stderr
            assert p.stdout.split() == ["leased", "1"]  # GPU 0 is held: the other user gets GPU 1
        # A lock file left 0644 by an older version: the other user still locks it (read-only).
        os.chmod(lock_dir / "gpu-0.lock", 0o644)
        p = _lease_as(second_user, lock_dir, "0")
        assert p.returncode == 0 and p.stdout.split() == ["leased", "0"], p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
