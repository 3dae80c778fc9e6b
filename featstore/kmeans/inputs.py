"""Checking what users hand to k-means: memory sizes, finite rows, 2-D float32 arrays.

Bad input is reported as an :class:`~featstore.errors.InputError` naming what is wrong
(the rows holding NaN/Inf, the unit that was not understood), never clustered silently.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from featstore.common.backend import get_array_module, to_numpy
from featstore.errors import InputError

_BYTES_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_bytes(value: str | int | float | None) -> int | None:
    """``"2GB"``, ``"512MiB"``, ``"1.5g"`` or a plain number of bytes -> bytes (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value <= 0:
            raise InputError(f"memory budget must be positive, got {value}")
        return int(value)
    m = _BYTES_RE.match(str(value))
    if not m:
        raise InputError(f"cannot read memory size {value!r} (examples: 2GB, 512MiB, 1500000000)")
    unit = (m.group(2) or "").lower().rstrip("b")
    if unit not in _UNITS:
        raise InputError(f"unknown unit in memory size {value!r}")
    out = int(float(m.group(1)) * _UNITS[unit])
    if out <= 0:
        raise InputError(f"memory budget must be positive, got {value!r}")
    return out


def check_finite(x: Any, *, what: str = "input") -> None:
    """Raise InputError naming the first rows that hold NaN or Inf."""
    finite: Any
    if isinstance(x, np.ndarray):
        # fast path without an (N, D) temporary: min and max are finite only if every value is
        if x.size == 0 or (np.isfinite(x.min()) and np.isfinite(x.max())):
            return
        finite = np.isfinite(x).all(axis=1)
    elif type(x).__module__.startswith("torch"):
        import torch

        finite = torch.isfinite(x).all(dim=1)
    else:
        finite = get_array_module(x).isfinite(x).all(axis=1)
    if not bool(finite.all()):
        bad = np.flatnonzero(~to_numpy(finite))
        raise InputError(
            f"{what}: {bad.size} row(s) contain NaN or Inf, e.g. rows {bad[:10].tolist()}; "
            "remove or repair them before clustering"
        )


def as_float32_2d(X: Any) -> Any:
    """User arrays -> float32 C-contiguous 2-D on their own device (NumPy/CuPy/torch)."""
    mod = type(X).__module__
    if mod.startswith("torch"):
        if X.ndim != 2:
            raise InputError(f"expected a 2-D (rows, features) array, got shape {tuple(X.shape)}")
        import torch

        return X.detach().to(torch.float32).contiguous()
    xp = get_array_module(X)
    X = xp.asarray(X)
    if X.ndim != 2:
        raise InputError(f"expected a 2-D (rows, features) array, got shape {X.shape}")
    return xp.ascontiguousarray(X, dtype=xp.float32)
