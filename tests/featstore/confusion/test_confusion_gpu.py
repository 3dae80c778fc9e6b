"""The CuPy kernels and the CuPy store path against the NumPy reference (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from confusioncases import blobs, circle, classification, store_of

from featstore.common.backend import cupy_usable
from featstore.confusion import confusion_degree, confusion_from_store, scale_confusion


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_gpu_kernels_match_numpy():
    import cupy as cp

    X, y = blobs(n_per=300, C=12, D=40, seed=9)
    X = np.concatenate(
        [X, np.concatenate([circle((0, 0), 1.0), circle((0, 0), 2.0)]) @ np.eye(2, 40)]
    )
    y = np.concatenate([y, np.repeat([12, 13], 64)])
    y[:5] = -1
    for k in (2, 7, None):
        for dtype in (np.float32, np.float64):
            ref = confusion_degree(X.astype(dtype), y, n_components=k, num_classes=16)
            gpu = confusion_degree(
                cp.asarray(X.astype(dtype)), cp.asarray(y), n_components=k, num_classes=16
            )
            assert gpu.backend == "cupy"
            # float32: the CPU path's moments are float32 products in 1024-row pieces (syrk), the
            # GPU's one cuBLAS product; on an H200 they differed by 1.1e-5 relative on M
            rtol = 5e-5 if dtype == np.float32 else 1e-5
            np.testing.assert_allclose(gpu.radii, ref.radii, rtol=rtol)
            np.testing.assert_allclose(gpu.M, ref.M, rtol=rtol, atol=1e-9)
            np.testing.assert_array_equal(gpu.counts, ref.counts)
            np.testing.assert_allclose(
                cp.asnumpy(scale_confusion(cp.asarray(gpu.M))), ref.scaled(), rtol=rtol, atol=1e-9
            )


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_gpu_store_path_matches_cpu(tmp_path, dtype):
    X, y = classification(seed=4)
    store = store_of(tmp_path / "s", X, y, dtype=dtype, split_at=25)
    for k in (2, None):
        for budget in (None, 0):
            cpu = confusion_from_store(
                store, y, n_components=k, memory_budget=budget, keep_plane=True
            )
            gpu = confusion_from_store(
                store, y, n_components=k, memory_budget=budget, keep_plane=True, device="cuda"
            )
            assert gpu.backend == "cupy"
            np.testing.assert_allclose(gpu.M, cpu.M, rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(gpu.radii, cpu.radii, rtol=1e-5)
            np.testing.assert_array_equal(gpu.rows, cpu.rows)
            np.testing.assert_allclose(np.abs(gpu.plane), np.abs(cpu.plane), rtol=1e-4, atol=1e-5)
