"""The block kernel in torch, on the CPU or a CUDA GPU (for GPUs without cuML/CuPy).

In memory the ``torch`` backend runs all restarts at once (:mod:`featstore.kmeans.batched`);
this kernel serves streamed passes, refinement from a store and prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.kmeans.kernels import SUB_BLOCK_BYTES, BlockKernel, BlockStats, register_kernel


class TorchKernel:
    """The same block kernel in torch (CPU or CUDA), for GPUs without cuML/CuPy."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.name = "torch"
        self.device = device

    def put(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True)

    def adopt(self, X: Any) -> Any:
        if type(X).__module__.startswith("torch"):
            return X.to(self.device)
        if type(X).__module__.startswith("cupy"):
            return self.torch.from_dlpack(X).to(self.device)
        return self.put(np.asarray(X))

    def host(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def moments(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        x64 = x.double()
        return self.host(x64.sum(dim=0)), self.host((x64 * x64).sum(dim=0))

    def take(self, x: Any, positions: np.ndarray) -> np.ndarray:
        return self.host(x[self.torch.as_tensor(positions, device=x.device)])

    def prepare(self, centers: np.ndarray) -> Any:
        C = self.torch.as_tensor(np.asarray(centers, np.float32), device=self.device)
        return C, (C * C).sum(dim=1)

    def _assign(self, prepared: Any, x: Any) -> tuple[Any, Any]:
        C, c_sq = prepared
        n = x.shape[0]
        step = max(256, SUB_BLOCK_BYTES // (4 * max(1, C.shape[0])))
        labs, d2s = [], []
        for s in range(0, n, step):
            xb = x[s : s + step]
            S = self.torch.addmm(c_sq[None, :], xb, C.T, beta=1.0, alpha=-2.0)
            val, lab = S.min(dim=1)
            labs.append(lab)
            d2s.append(val + (xb * xb).sum(dim=1))
        return self.torch.cat(labs), self.torch.cat(d2s).clamp_min_(0)

    def assign(self, prepared: Any, x: Any) -> tuple[np.ndarray, float]:
        labels, d2 = self._assign(prepared, x)
        return self.host(labels).astype(np.int32), float(d2.double().sum())

    def step(self, prepared: Any, x: Any, k: int, n_far: int) -> tuple[np.ndarray, BlockStats]:
        torch = self.torch
        labels, d2 = self._assign(prepared, x)
        sums = torch.zeros((k, x.shape[1]), dtype=torch.float32, device=x.device)
        sums.index_add_(0, labels, x)
        m = min(n_far, x.shape[0])
        far = torch.topk(d2, m).indices if m else labels[:0]
        stats = BlockStats(
            sums=self.host(sums),
            counts=self.host(torch.bincount(labels, minlength=k)).astype(np.int64),
            inertia=float(d2.double().sum()),
            far_d2=self.host(d2[far]).astype(np.float64),
            far_x=self.host(x[far]),
            far_label=self.host(labels[far]).astype(np.int64),
        )
        return self.host(labels).astype(np.int32), stats


@register_kernel("torch")
def _torch_kernel(device: str) -> BlockKernel:
    return TorchKernel(device)
