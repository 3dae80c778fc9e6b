"""Run-time choice of device and array module.

All array maths in diccae is written once against an array module ``xp`` (NumPy or
CuPy).  These helpers pick the module from the data's device, so a function called
with a CuPy array runs on the GPU and the same function called with a NumPy array
runs on the CPU.  Nothing here imports CuPy or cuML eagerly: they import without a
GPU but cannot compute, so availability is probed by actually touching a device.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import numpy as np

from featstore.errors import BackendUnavailable, InputError

DEVICES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=1)
def cupy_usable() -> bool:
    """True when CuPy imports *and* a CUDA device answers."""
    try:
        cp = importlib.import_module("cupy")
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, missing driver ...
        return False


@functools.lru_cache(maxsize=1)
def torch_cuda_usable() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def cuml_usable() -> bool:
    """True when cuML imports and a GPU is present for it to use."""
    if not cupy_usable():
        return False
    try:
        importlib.import_module("cuml")
        return True
    except Exception:
        return False


def resolve_device(device: str = "auto") -> str:
    """Map ``auto|cpu|cuda`` (or ``cuda:N``) to a concrete device string.

    ``auto`` picks CUDA when torch or CuPy can reach a GPU.  Asking for ``cuda`` on a
    machine without one is an error rather than a silent fallback, because a user who
    asked for the GPU wants to know they are not getting it.
    """
    if device == "auto":
        return "cuda" if (torch_cuda_usable() or cupy_usable()) else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not (torch_cuda_usable() or cupy_usable()):
            raise BackendUnavailable(
                f"device {device!r} requested but no CUDA GPU is visible "
                "(use --device cpu, or install the GPU extras: pip install 'diccae[gpu]')"
            )
        return device
    raise InputError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


def get_array_module(x: Any) -> ModuleType:
    """Return ``cupy`` for CuPy arrays and ``numpy`` for everything else."""
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return importlib.import_module("cupy")
    return np


def array_module_for(device: str) -> ModuleType:
    """Array module for a resolved device string."""
    if device.startswith("cuda"):
        if not cupy_usable():
            raise BackendUnavailable("CuPy with a CUDA device is needed for GPU array maths")
        return importlib.import_module("cupy")
    return np


def to_device(x: np.ndarray, device: str) -> Any:
    """Move a host array to ``device`` (no copy on CPU)."""
    return array_module_for(device).asarray(x)


def to_numpy(x: Any) -> np.ndarray:
    """Bring an array (NumPy, CuPy or torch) back to the host as NumPy."""
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
