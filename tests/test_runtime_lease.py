"""GpuLease across real processes (flock locks belong to open file descriptions, so threads
could share a lock by accident; subprocesses cannot)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.runtime.lease import GpuLease, lock_holders

ROOT = Path(__file__).resolve().parents[1]

HOLDER = r"""
import os, sys, time
from pipeline.runtime.lease import GpuLease
lease = GpuLease(1, timeout=60, poll=0.05)
lease.acquire()
print("LEASED", os.environ["CUDA_VISIBLE_DEVICES"], time.time(), flush=True)
sys.stdin.readline()
lease.release()
"""


class _Holder:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            cwd=ROOT,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)

    def leased(self, timeout: float) -> tuple[str, float]:
        _, gpu, when = self.lines.get(timeout=timeout).split()
        return gpu, float(when)

    def release(self) -> None:
        self.proc.stdin.write("\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        self.proc.wait(timeout=10)


def test_concurrent_processes_get_distinct_gpus(tmp_path: Path) -> None:
    env = {**os.environ, "WSSS_GPU_POOL": "0,1,2,3", "WSSS_GPU_LOCK_DIR": str(tmp_path)}
    env.pop("SLURM_JOB_ID", None)
    procs: list[_Holder] = []
    try:
        holders = [_Holder(env) for _ in range(4)]
        procs += holders
        ids = [h.leased(timeout=30)[0] for h in holders]
        assert sorted(ids) == ["0", "1", "2", "3"]
        assert len(lock_holders(tmp_path)) == 4
        assert f"pid={holders[0].proc.pid}" in (tmp_path / f"gpu-{ids[0]}.lock").read_text()

        # A fifth job waits, and gets exactly the id that is released.
        waiter = _Holder(env)
        procs.append(waiter)
        with pytest.raises(queue.Empty):
            waiter.lines.get(timeout=1.5)
        assert waiter.proc.poll() is None
        released_at = time.time()
        holders[1].release()
        gpu, got_at = waiter.leased(timeout=10)
        assert gpu == ids[1] and got_at >= released_at

        # A SIGKILLed holder's lease is freed by the kernel.
        holders[2].proc.send_signal(signal.SIGKILL)
        holders[2].proc.wait(timeout=10)
        late = _Holder(env)
        procs.append(late)
        assert late.leased(timeout=10)[0] == ids[2]
    finally:
        for h in procs:
            if h.proc.poll() is None:
                h.proc.kill()
                h.proc.wait()


def test_timeout_and_oversized_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with GpuLease(1, pool=["0"], lock_dir=tmp_path) as held:
        assert held.ids == ["0"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        # a second open file description conflicts even inside one process
        with pytest.raises(PipelineError, match=f"pid={os.getpid()}"):
            GpuLease(1, pool=["0"], lock_dir=tmp_path, timeout=0.2, poll=0.05).acquire()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # restored on release
    with pytest.raises(PipelineError, match="resources.gpu"):
        GpuLease(3, pool=["0", "1"], lock_dir=tmp_path).acquire()


def test_slurm_allocation_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    monkeypatch.setenv("WSSS_GPU_POOL", "0,1,2,3")
    lock_dir = tmp_path / "locks"
    with GpuLease(2, lock_dir=lock_dir) as lease:
        assert lease.ids == ["2", "5"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"
    assert not lock_dir.exists()


@pytest.mark.parametrize("var", ["WSSS_GPU_POOL", "CUDA_VISIBLE_DEVICES"])
def test_empty_pool_is_a_noop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("WSSS_GPU_POOL", raising=False)
    monkeypatch.setenv(var, "")
    lock_dir = tmp_path / "locks"
    with GpuLease(1, lock_dir=lock_dir) as lease:
        assert lease.ids == [] and not lease.held
        assert os.environ.get(var) == ""
    assert not lock_dir.exists()
