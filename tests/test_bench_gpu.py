"""The GPU micro-benchmark's command, run on CPU with the tiny models (the figures' plumbing)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, tool_env


def test_gpu_bench_cpu_tiny(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "pipeline.bench.gpu", "--device", "cpu", "--tiny", "--iters", "3",
           "--workdir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["setting"] == "tiny" and result["warmup"] == 1
    figures = [result["seco"][p]["s_per_iter"] for p in ("fp32", "bf16")]
    figures += [result["deeplab"][p]["s_per_iter"] for p in ("fp32", "bf16")]
    figures.append(result["make_cam"]["images_per_s"])
    assert all(isinstance(v, float) and v > 0 for v in figures), figures
    # No CUDA: no peak-memory figures, and the stages' metrics get no memory column.
    memory = [result[s][p]["peak_mem_gib"] for s in ("seco", "deeplab") for p in ("fp32", "bf16")]
    assert memory + [result["make_cam"]["peak_mem_gib"]] == [None] * 5
    header = (tmp_path / "work/runs/train_seco-fp32/metrics.csv").read_text().splitlines()[0]
    assert "peak_mem_gib" not in header and header.endswith("lr,seconds")
    assert "train_seco" in proc.stdout and "images/s" in proc.stdout


def test_gpu_bench_refuses_without_cuda(tmp_path):
    """Without a GPU, --device cuda (the default) fails with one clear line before any work."""
    import torch

    if torch.cuda.is_available():
        return  # nothing to check on a GPU machine
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench.gpu", "--out", str(tmp_path / "g.json")], cwd=REPO,
                          env=tool_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --device cuda: CUDA is not available")
    assert not (tmp_path / "g.json").exists()
