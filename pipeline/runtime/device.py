"""Device choice and numeric precision (config keys `runtime.device`, `runtime.amp`)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import torch

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

AMP_MODES = ("off", "bf16")
_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def select_device(requested: str | None = None) -> torch.device:
    """Resolve `runtime.device`: None/"auto" -> CUDA if available else CPU; "cpu", "cuda", "cuda:N".

    Device indices are those torch sees, i.e. already filtered by CUDA_VISIBLE_DEVICES (which a
    GpuLease may have set); no remapping happens here.
    """
    req = "auto" if requested is None else str(requested).strip().lower()
    if req == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if req == "cpu":
        return torch.device("cpu")
    match = _CUDA_RE.match(req)
    if match is None:
        raise PipelineError(
            f"runtime.device: unknown device {requested!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    if not torch.cuda.is_available():
        raise PipelineError(
            f"runtime.device: {requested!r} requested but CUDA is not available on this machine "
            "(set runtime.device to 'auto' or 'cpu')"
        )
    if match.group(1) is None:
        return torch.device("cuda")
    index = int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise PipelineError(
            f"runtime.device: {requested!r} requested but only {count} CUDA device(s) are visible"
        )
    return torch.device("cuda", index)


def _check_amp(amp: str) -> str:
    if amp not in AMP_MODES:
        raise PipelineError(f"runtime.amp: unknown value {amp!r}; expected one of {list(AMP_MODES)}")
    return amp


def setup_precision(device: torch.device, amp: str = "off") -> str:
    """Configure matmul precision for `device`; return the effective amp mode ("off" or "bf16").

    On CUDA, TF32 is enabled for matmuls and convolutions (Ampere+ speedup, accuracy sufficient
    for segmentation training). On CPU we keep strict fp32 so runs stay deterministic and
    comparable with tests, hence bf16 is dropped there.
    """
    _check_amp(amp)
    if device.type != "cuda":
        if amp != "off":
            log.info("runtime.amp=%s ignored on %s: using deterministic fp32", amp, device)
        return "off"
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("runtime.amp=bf16 ignored: %s does not support bfloat16; using fp32/TF32", device)
        return "off"
    log.info("precision on %s: TF32 matmul, amp=%s", device, amp)
    return amp


@contextlib.contextmanager
def autocast(device: torch.device, amp: str = "off") -> Iterator[None]:
    """bf16 autocast on CUDA when amp == "bf16"; a no-op otherwise (bf16 needs no GradScaler)."""
    _check_amp(amp)
    if device.type == "cuda" and amp == "bf16":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on a CUDA `device` (no-op elsewhere), so a loop run after
    other work in the same process reports its own peak, not the process's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak memory held by tensors on a CUDA `device` since the last reset, in GiB
    (`torch.cuda.max_memory_allocated`: the caching allocator's reserve is not counted);
    None on other devices, which have no such counter."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
