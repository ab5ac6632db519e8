"""select_device / setup_precision / autocast on a CPU-only machine."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.runtime.device import autocast, select_device, setup_precision


def test_cpu_and_auto() -> None:
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device(None) == torch.device("cpu")
        assert select_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("req", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_gpu_names_the_config_key(req: str) -> None:
    with pytest.raises(PipelineError, match=r"runtime\.device"):
        select_device(req)


def test_unknown_device_is_rejected() -> None:
    with pytest.raises(PipelineError, match=r"runtime\.device"):
        select_device("tpu")


def test_bf16_is_ignored_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert setup_precision(cpu, "bf16") == "off"
    with autocast(cpu, "bf16"):
        out = torch.nn.Linear(2, 2)(torch.ones(1, 2))
    assert out.dtype == torch.float32
    with pytest.raises(PipelineError, match=r"runtime\.amp"):
        setup_precision(cpu, "fp16")
