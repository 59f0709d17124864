"""Compatibility shim: the compiled kernels moved to hope_engine.kernels (built at install time by setup.py, loaded
from the package; never compiled at run time). ``lib()`` / ``usable()`` answer for the active backend setting."""

from __future__ import annotations

import ctypes

import torch

from . import kernels
from .kernels import native as _native_backend


def lib() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (not built, HOPE_NATIVE=0, or the torch backend selected)."""
    return None if kernels.get_backend() == "torch" else _native_backend.lib()


def error() -> str | None:
    """Why the kernels are unavailable."""
    return _native_backend.error()


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels would run on these tensors: CPU, float32/float64, one dtype, library loaded."""
    t0 = tensors[0]
    if t0.device.type != "cpu" or t0.dtype not in (torch.float32, torch.float64):
        return False
    if any(t.device.type != "cpu" or t.dtype != t0.dtype for t in tensors[1:]):
        return False
    return lib() is not None
