"""Suite-wide rules: ``@pytest.mark.gpu`` tests run only where a CUDA GPU is usable.

One place decides it, with the same probes the library uses to pick a device
(:func:`featstore.common.backend.torch_cuda_usable` or ``cupy_usable``), so a GPU test
needs only the marker, and every skip says the same thing.  A test that needs one
library in particular (CuPy, say) still adds its own condition for that.
"""

from __future__ import annotations

import pytest

NO_GPU = "needs a CUDA GPU (torch.cuda or CuPy); none is usable here"


def gpu_usable() -> bool:
    """Whether torch or CuPy can reach a CUDA device (probed once, on first use)."""
    from featstore.common.backend import cupy_usable, torch_cuda_usable

    return torch_cuda_usable() or cupy_usable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not marked or gpu_usable():  # probe only when a gpu test was collected
        return
    skip = pytest.mark.skip(reason=NO_GPU)
    for item in marked:
        item.add_marker(skip)
