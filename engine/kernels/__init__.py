"""Kernel backends: one set of functions with the same signatures, chosen once at load.

`reference` (torch) is the truth and runs everywhere; `cupy_ops` fuses the same operations
on NVIDIA GPUs. A machine without CUDA never imports CuPy.
"""
from __future__ import annotations

from types import ModuleType

import engine.kernels.reference as reference


def select_backend(name: str = "auto", device: str = "cpu") -> ModuleType:
    """Return the kernel module for `name` ("auto" | "torch" | "cupy") on `device`."""
    if name not in ("auto", "torch", "cupy"):
        raise ValueError(f"kernels must be 'auto', 'torch' or 'cupy', not {name!r}")
    if name == "torch" or not str(device).startswith("cuda"):
        if name == "cupy":
            raise ValueError("kernels='cupy' needs a CUDA device")
        return reference
    try:
        import engine.kernels.cuda.ops as cupy_ops  # noqa: PLC0415 (imported only on CUDA machines)
    except ImportError as exc:
        if name == "cupy":
            raise ValueError(f"kernels='cupy' but CuPy is unavailable: {exc}") from exc
        return reference
    return cupy_ops
