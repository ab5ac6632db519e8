"""Import shims that must run before torchvision/timm are imported.

torchvision 0.28.0 is the only release that pins torch 2.13.0, and its wheel is a CUDA build.
On a CPU-only torch its compiled ops fail to load silently, and `import torchvision` then
raises "operator torchvision::nms does not exist" while registering fake kernels. Defining the
two op schemas first lets torchvision (and therefore timm) import; only the compiled detection
ops stay unavailable, and this project uses none of them.
"""

from __future__ import annotations

import torch

_LIB = None


def ensure_torchvision_ops() -> None:
    global _LIB
    if _LIB is not None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute access is the probe
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")


def import_timm():
    """Import timm after making torchvision importable; returns the module."""
    ensure_torchvision_ops()
    import timm

    return timm
