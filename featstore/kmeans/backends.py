"""Which k-means backend and device run (``auto`` resolved once, never a silent
fallback), and the block kernel that serves them."""

from __future__ import annotations

import featstore.kmeans.sklearn_kernel  # noqa: F401  (registers the "sklearn" kernel)
import featstore.kmeans.torch_kernel  # noqa: F401  (registers the "torch" kernel)
from featstore.common.backend import (
    cuml_usable,
    cupy_usable,
    resolve_device,
    torch_cuda_usable,
)
from featstore.errors import BackendUnavailable
from featstore.kmeans.kernels import BlockKernel, kernel_factory, kernel_names

BACKENDS = ("auto", "sklearn", "faiss", "numpy", "cupy", "torch", "cuml")


def resolve_backend(backend: str = "auto", device: str = "auto") -> tuple[str, str]:
    """``(backend, device)`` actually used.

    ``auto`` on a GPU: torch on CUDA with batched restarts (CuPy alone -> ``cupy``;
    cuML only by name, it has not been run on our GPU test machine);
    on the CPU: ``sklearn``, i.e. scikit-learn's fused Cython Lloyd loop for in-memory
    runs (measured fastest on 2 cores: 1.4-2.7x faster than faiss; see bench/kmeans.py),
    with the same loop per block for streamed passes and prediction
    (:mod:`featstore.kmeans.sklearn_kernel`).  Asking for a
    backend or device that is not usable raises BackendUnavailable, never falls back.
    """
    if backend not in BACKENDS:
        raise BackendUnavailable(
            f"unknown k-means backend {backend!r}; expected one of {', '.join(BACKENDS)}"
        )
    dev = resolve_device(device)
    if backend == "auto":
        if dev.startswith("cuda"):
            # torch is the GPU path verified on real hardware (scripts/gpu_check.sh);
            # cuML is used only when asked for by name
            if torch_cuda_usable():
                return "torch", dev
            return "cupy", dev
        return "sklearn", "cpu"
    if backend == "sklearn":
        if dev != "cpu" and device != "auto":
            raise BackendUnavailable("backend 'sklearn' runs on the CPU; use --device cpu")
        return "sklearn", "cpu"
    if backend == "faiss":
        if dev != "cpu" and device != "auto":
            raise BackendUnavailable(
                "backend 'faiss' runs on the CPU here (faiss-cpu); use --device cpu"
            )
        return "faiss", "cpu"
    if backend == "cuml":
        if not cuml_usable():
            raise BackendUnavailable(
                "backend 'cuml' needs cuML and a CUDA GPU (pip install 'diccae[gpu]')"
            )
        return "cuml", dev if dev.startswith("cuda") else "cuda"
    if backend in ("numpy", "cupy"):
        if backend == "cupy" or dev.startswith("cuda"):
            if not cupy_usable():
                raise BackendUnavailable("backend 'cupy' needs CuPy and a CUDA GPU")
            return "cupy", dev if dev.startswith("cuda") else "cuda"
        return "numpy", "cpu"
    # torch
    if dev.startswith("cuda") and not torch_cuda_usable():
        raise BackendUnavailable("backend 'torch' on CUDA needs a CUDA build of torch and a GPU")
    return "torch", dev


def make_kernel(backend: str, device: str) -> BlockKernel:
    """The registered block kernel of a resolved ``(backend, device)``."""
    factory = kernel_factory(backend)
    if factory is None:
        raise BackendUnavailable(
            f"no k-means kernel named {backend!r}; known: {', '.join(kernel_names())}"
        )
    return factory(device)
