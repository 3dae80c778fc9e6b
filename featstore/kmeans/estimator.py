"""K-means pseudo-labels at the speed of the hardware, in memory or streamed from a store.

DICCAE's self-supervised phase trains on K-means cluster ids (K=300, best of 20
restarts) and re-clusters fused features every few epochs, so clustering runs many
times on millions of rows.  The design follows from that:

* **One Lloyd loop, many kernels.**  Every backend only supplies a *block kernel*:
  assign a block of rows to the nearest centre and return the block's per-cluster
  sums, counts, inertia and farthest points.  The centre update, empty-cluster
  re-seeding and convergence test are written once, in float64 NumPy on the host
  (they touch K x D numbers, not N x D).  Kernels: ``faiss`` (CPU, faiss's BLAS
  nearest-centroid search), ``numpy`` (blocked sgemm; with CuPy arrays the same code
  runs on the GPU as ``cupy``), ``torch`` (CPU or CUDA) and ``cuml`` (cuML's own
  KMeans, one call per restart with ``n_init=1`` so every restart is reported).
  In memory, the ``torch`` backend runs all restarts at once
  (:mod:`featstore.kmeans.batched`): one distance product over every restart's
  centres per iteration.
* **The same loop in memory and out of core.**  In memory the blocks are slices of
  one array; when the features exceed ``memory_budget`` the blocks are read from the
  store on every pass (prefetched in a thread), so streaming gives the same
  centres as in memory up to float rounding.
* **Restarts on a sample.**  Picking the best of ``n_init`` seedings does not need
  every row: with ``restart_sample`` the restarts run on a random sample and only
  the winner is refined on all rows (see :class:`KMeans`).
* **k-means++ seeding on a sample** (greedy, ``2 + 3 ln K`` candidates per step;
  scikit-learn uses ``2 + ln K``, which misses clusters, see :func:`seeding_trials`), so seeding costs O(sample x K x D), not O(N x K x D).

Rows with NaN/Inf are reported as an :class:`~featstore.errors.InputError` naming
them, never clustered silently.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from featstore.common.backend import (
    cuml_usable,
    cupy_usable,
    get_array_module,
    resolve_device,
    to_numpy,
    torch_cuda_usable,
)
from featstore.common.prefetch import read_ahead
from featstore.errors import BackendUnavailable, InputError
from featstore.kmeans.batched import batched_lloyd

BACKENDS = ("auto", "sklearn", "faiss", "numpy", "cupy", "torch", "cuml")
#: rows per in-memory block: big enough for sgemm efficiency, small enough for caches
MEMORY_BLOCK_ROWS = 65536
#: rows per distance sub-block inside the numpy/cupy/torch kernels (bounds the N x K temp)
_SUB_BLOCK_BYTES = 32 << 20
#: the same on the CPU, sized for the cache: the (rows x K) distances are written by the
#: sgemm and read back by the argmin while still in L2, as in scikit-learn's Lloyd loop
_HOST_SUB_BLOCK_BYTES = 1 << 20

ProgressFn = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- helpers
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


def _as_float32_2d(X: Any) -> Any:
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


# --------------------------------------------------------------------------- kernels
@dataclass
class BlockStats:
    """What one block contributes to a Lloyd update (all host NumPy)."""

    sums: np.ndarray  # (K, D) float32/64 per-cluster sums of the block's rows
    counts: np.ndarray  # (K,) int64
    inertia: float
    far_d2: np.ndarray  # (m,) squared distances of the block's farthest rows
    far_x: np.ndarray  # (m, D) those rows
    far_label: np.ndarray  # (m,) their clusters


class _XpKernel:
    """Blocked sgemm assignment written once for NumPy and CuPy (``xp``)."""

    def __init__(self, name: str, device: str):
        self.name = name
        self.device = device
        self.xp = __import__("cupy") if device.startswith("cuda") else np

    # data movement ------------------------------------------------------------
    def put(self, x: np.ndarray) -> Any:
        return self.xp.asarray(x) if self.xp is not np else x

    def adopt(self, X: Any) -> Any:
        """A user array (any device) as this kernel's native float32 array."""
        if type(X).__module__.startswith("torch"):
            if self.xp is np:
                return X.detach().cpu().numpy()
            return self.xp.from_dlpack(X)
        if self.xp is np:
            return to_numpy(X)
        return self.xp.asarray(X)

    def host(self, x: Any) -> np.ndarray:
        return to_numpy(x)

    def moments(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature sum and sum of squares of a block, in float64, on the block's device."""
        x64 = x.astype(self.xp.float64)
        return self.host(x64.sum(axis=0)), self.host((x64 * x64).sum(axis=0))

    def take(self, x: Any, positions: np.ndarray) -> np.ndarray:
        """Rows ``positions`` of a block as host float32 (only those rows cross to the host)."""
        return self.host(x[self.xp.asarray(positions)]) if self.xp is not np else x[positions]

    # maths --------------------------------------------------------------------
    def prepare(self, centers: np.ndarray) -> Any:
        C = self.xp.asarray(centers, dtype=self.xp.float32)
        # -2 C^T once per iteration (scaling by -2 is exact), so each sub-block is sgemm + add + argmin
        return self.xp.ascontiguousarray(-2.0 * C.T), (C * C).sum(axis=1)

    def _assign(self, prepared: Any, x: Any) -> tuple[Any, Any]:
        """Nearest centre and squared distance, via ||x||^2 - 2 x.c + ||c||^2 in sub-blocks."""
        xp = self.xp
        C2t, c_sq = prepared
        n = x.shape[0]
        labels = xp.empty(n, dtype=xp.int64)
        d2 = xp.empty(n, dtype=xp.float32)
        budget = _HOST_SUB_BLOCK_BYTES if xp is np else _SUB_BLOCK_BYTES
        step = max(256, budget // (4 * max(1, C2t.shape[1])))
        S = xp.empty((min(step, n), C2t.shape[1]), dtype=xp.float32)
        for s in range(0, n, step):
            xb = x[s : s + step]
            Sb = S[: xb.shape[0]]
            xp.matmul(xb, C2t, out=Sb)
            Sb += c_sq[None, :]
            lab = Sb.argmin(axis=1)
            labels[s : s + step] = lab
            if xp is np:
                d2[s : s + step] = Sb[np.arange(lab.shape[0]), lab] + np.einsum("ij,ij->i", xb, xb)
            else:
                d2[s : s + step] = Sb[xp.arange(lab.shape[0]), lab] + (xb * xb).sum(axis=1)
        return labels, xp.maximum(d2, 0)

    def assign(self, prepared: Any, x: Any) -> tuple[np.ndarray, float]:
        labels, d2 = self._assign(prepared, x)
        return self.host(labels).astype(np.int32), float(d2.sum(dtype=self.xp.float64))

    def step(self, prepared: Any, x: Any, k: int, n_far: int) -> tuple[np.ndarray, BlockStats]:
        labels, d2 = self._assign(prepared, x)
        return self.host(labels).astype(np.int32), self._stats(x, labels, d2, k, n_far)

    def _segment_sum(self, x: Any, labels: Any, k: int) -> Any:
        xp = self.xp
        if xp is np:
            import scipy.sparse as sp

            n = x.shape[0]
            onehot = sp.csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))), shape=(k, n))
            return onehot @ x
        import cupyx

        sums = xp.zeros((k, x.shape[1]), dtype=xp.float32)
        cupyx.scatter_add(sums, labels, x)
        return sums

    def _stats(self, x: Any, labels: Any, d2: Any, k: int, n_far: int) -> BlockStats:
        xp = self.xp
        m = min(n_far, x.shape[0])
        far = xp.argpartition(d2, x.shape[0] - m)[x.shape[0] - m :] if m else xp.empty(0, xp.int64)
        return BlockStats(
            sums=self.host(self._segment_sum(x, labels, k)),
            counts=self.host(xp.bincount(labels, minlength=k)).astype(np.int64),
            inertia=float(d2.sum(dtype=xp.float64)),
            far_d2=self.host(d2[far]).astype(np.float64),
            far_x=self.host(x[far]),
            far_label=self.host(labels[far]).astype(np.int64),
        )


class _FaissKernel(_XpKernel):
    """faiss's exhaustive L2 search (BLAS + fused top-1) as the CPU assignment kernel."""

    def __init__(self) -> None:
        super().__init__("faiss", "cpu")
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
            raise BackendUnavailable(
                "backend 'faiss' needs faiss-cpu (pip install faiss-cpu)"
            ) from exc
        self._faiss = faiss

    def prepare(self, centers: np.ndarray) -> Any:
        index = self._faiss.IndexFlatL2(centers.shape[1])
        index.add(np.ascontiguousarray(centers, dtype=np.float32))
        return index

    def _assign(self, prepared: Any, x: Any) -> tuple[Any, Any]:
        d2, labels = prepared.search(np.ascontiguousarray(x), 1)
        return labels[:, 0], np.maximum(d2[:, 0], 0)


class _SklearnKernel(_XpKernel):
    """The ``sklearn`` backend's streamed passes and prediction: scikit-learn's fused E-step.

    Labels come from scikit-learn's ``lloyd_iter_chunked_dense`` with
    ``update_centers=False`` (per 256-row chunk: single-threaded sgemm into a buffer
    that stays in cache, then argmin; chunks spread over all cores), 3x faster on 2
    cores than our blocked NumPy sgemm, whose (rows x K) distances go through memory.
    Each row's squared distance to its own centre is then computed directly.  Block
    sums, counts and far rows are the NumPy kernel's.
    """

    def __init__(self, fns: Any) -> None:
        super().__init__("sklearn", "cpu")
        self._estep, self._n_threads = fns

    def prepare(self, centers: np.ndarray) -> Any:
        return np.ascontiguousarray(centers, dtype=np.float32)

    def _assign(self, prepared: Any, x: Any) -> tuple[Any, Any]:
        C = prepared
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, k = x.shape[0], C.shape[0]
        labels = np.empty(n, np.int32)
        self._estep(
            x,
            np.ones(n, np.float32),
            C,
            C,
            np.zeros(k, np.float32),
            labels,
            np.zeros(k, np.float32),
            self._n_threads(),
            update_centers=False,
        )
        d2 = np.empty(n, np.float32)
        for s in range(0, n, 4096):
            diff = x[s : s + 4096] - C[labels[s : s + 4096]]
            d2[s : s + 4096] = np.einsum("ij,ij->i", diff, diff)
        return labels, d2


def _sklearn_estep() -> Any:
    """scikit-learn's chunked assignment step (BLAS held to one thread, as scikit-learn does), or None."""
    try:
        from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
        from sklearn.utils.parallel import _threadpool_controller_decorator
    except ImportError:  # pragma: no cover - a future scikit-learn may move them
        return None
    return _threadpool_controller_decorator(limits=1, user_api="blas")(
        lloyd_iter_chunked_dense
    ), _openmp_effective_n_threads


class _TorchKernel:
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
        step = max(256, _SUB_BLOCK_BYTES // (4 * max(1, C.shape[0])))
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


def resolve_backend(backend: str = "auto", device: str = "auto") -> tuple[str, str]:
    """``(backend, device)`` actually used.

    ``auto`` on a GPU: torch on CUDA with batched restarts (CuPy alone -> ``cupy``;
    cuML only by name, it has not been run on our GPU test machine);
    on the CPU: ``sklearn``, i.e. scikit-learn's fused Cython Lloyd loop for in-memory
    runs (measured fastest on 2 cores: 1.4-2.7x faster than faiss; see bench/kmeans.py),
    with the NumPy sgemm kernel for streamed passes and prediction.  Asking for a
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


def _make_kernel(backend: str, device: str) -> Any:
    if backend == "faiss":
        return _FaissKernel()
    if backend == "torch":
        return _TorchKernel(device)
    if backend in ("cupy", "cuml"):  # cuML streams/refines with the CuPy kernel
        return _XpKernel("cupy", device)
    if backend == "sklearn" and (fns := _sklearn_estep()) is not None:
        return _SklearnKernel(fns)  # sklearn's streamed passes / prediction
    return _XpKernel("numpy", "cpu")


# --------------------------------------------------------------------------- sources
class _ArraySource:
    """Rows already in (host or device) memory, handed out as slices."""

    def __init__(self, X: Any, block_rows: int = MEMORY_BLOCK_ROWS):
        self.X = X
        self.n = int(X.shape[0])
        self.dim = int(X.shape[1])
        self.block_rows = block_rows

    def blocks(self) -> Iterator[tuple[int, Any]]:
        for s in range(0, self.n, self.block_rows):
            yield s, self.X[s : s + self.block_rows]


class _StoreSource:
    """Rows streamed from a FeatureView on every pass, one read-ahead block in a thread."""

    def __init__(self, view: Any, kernel: Any, rows_per_block: int, n: int):
        self.view = view
        self.kernel = kernel
        self.rows_per_block = rows_per_block
        self.n = n
        self.dim = view.dim

    def blocks(self) -> Iterator[tuple[int, Any]]:
        """Store blocks in order, the next one read (and decompressed) while this one computes."""
        pos = 0
        for x in read_ahead(
            (x for _rows, x in self.view.iter_blocks(self.rows_per_block)), depth=1
        ):
            yield pos, self.kernel.put(x)
            pos += x.shape[0]


@dataclass
class _Scan:
    """One pass over the data: count, spread (for tol) and a uniform sample."""

    n: int
    mean_var: float
    mean: np.ndarray  # (D,) float64 per-feature mean
    sample: np.ndarray  # (s, D) float32 host, rows in data order
    sample_pos: np.ndarray  # (s,) positions of the sample rows
    rows: np.ndarray | None  # store rows of every position (stores only)


def _host_moments(x: np.ndarray, piece: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature sum and sum of squares in float64, a few cache-sized rows at a time.

    Converting a whole 65,536-row block to float64 made two temporaries 4x its size
    (0.5 GB per block at D=512), which cost more than a Lloyd iteration's arithmetic.
    """
    s1 = np.zeros(x.shape[1], np.float64)
    s2 = np.zeros(x.shape[1], np.float64)
    for a in range(0, x.shape[0], piece):
        p = x[a : a + piece].astype(np.float64)
        s1 += p.sum(axis=0)
        s2 += np.einsum("ij,ij->j", p, p)
    return s1, s2


def _scan(
    blocks: Iterator[tuple[np.ndarray | None, Any]],
    kernel: Any,
    dim: int,
    sample_size: int,
    rs: np.random.RandomState,
) -> _Scan:
    """Uniform sample without knowing n: keep the rows with the smallest random keys.

    Keys are drawn block by block from one RandomState, which yields the same numbers
    whatever the block sizes, so in-memory and streamed runs pick the same sample.
    """
    n = 0
    s1 = np.zeros(dim, np.float64)
    s2 = np.zeros(dim, np.float64)
    keep_key = np.empty(0, np.float64)
    keep_pos = np.empty(0, np.int64)
    keep_x = np.empty((0, dim), np.float32)
    rows_all: list[np.ndarray] = []
    for rows, xb in blocks:
        b = int(xb.shape[0])
        if rows is not None:
            rows_all.append(rows)
        if isinstance(xb, np.ndarray):
            m1, m2 = _host_moments(xb)
        else:  # device block: reduce there, bring back only the sampled rows
            m1, m2 = kernel.moments(xb)
        s1 += m1
        s2 += m2
        keys = rs.random_sample(b)
        if keep_key.size >= sample_size:
            cut = keep_key.max()
            cand = np.flatnonzero(keys < cut)
        else:
            cand = np.arange(b)
        if cand.size:
            # choose the kept keys first, then copy only the block rows that made it
            all_key = np.concatenate([keep_key, keys[cand]])
            if all_key.size > sample_size:
                sel = np.argpartition(all_key, sample_size - 1)[:sample_size]
                sel.sort()
            else:
                sel = np.arange(all_key.size)
            old = sel[sel < keep_key.size]
            new = cand[sel[sel >= keep_key.size] - keep_key.size]
            picked = xb[new] if isinstance(xb, np.ndarray) else kernel.take(xb, new)
            keep_x = np.concatenate([keep_x[old], picked])
            keep_pos = np.concatenate([keep_pos[old], new + n])
            keep_key = all_key[sel]
        n += b
    order = np.argsort(keep_pos)
    var = s2 / max(n, 1) - (s1 / max(n, 1)) ** 2
    return _Scan(
        n=n,
        mean_var=float(np.maximum(var, 0).mean()) if n else 0.0,
        mean=s1 / max(n, 1),
        sample=keep_x[order],
        sample_pos=keep_pos[order],
        rows=np.concatenate(rows_all) if rows_all else None,
    )


# --------------------------------------------------------------------------- seeding
def _cand_sq_dists(xp: Any, X: Any, x_sq: Any, Y: Any) -> Any:
    """Squared distances (m, n) float32 from the m rows ``Y`` to every row of ``X`` (row-major, no transpose)."""
    d = Y @ X.T
    d *= -2.0
    d += x_sq[None, :]
    d += (Y * Y).sum(axis=1)[:, None]
    return xp.maximum(d, 0, out=d)


def seeding_trials(k: int) -> int:
    """Candidates per greedy k-means++ step: ``2 + 3 * ln k`` (scikit-learn uses ``2 + ln k``).

    Measured on Gaussian blobs (K=100 in 128-d, 10,000 rows, 20 seedings x 2 data sets):
    with ``2 + ln k`` only 3/20 seedings put one centre in every blob, and a missed blob
    is a local minimum Lloyd cannot leave (+10-20 % inertia); with ``2 + 3 ln k`` 13/20
    do.  That is what makes ``n_init`` restarts reliably find the best partition, at a
    seeding cost still far below one Lloyd pass over the data (the seeding sample is small).
    """
    return 2 + int(3 * math.log(k)) if k > 1 else 1


def kmeans_plusplus(
    X: Any, k: int, rs: np.random.RandomState, *, n_local_trials: int | None = None
) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's variant) -> (k, D) float32 host.

    Each step draws :func:`seeding_trials` candidates with probability proportional to
    the squared distance to the chosen centres and keeps the one that lowers the
    potential most.  All random numbers come from ``rs`` on the host, so the result
    is the same on every device.  Runs on NumPy or CuPy (``X``'s module).
    """
    return kmeans_plusplus_many(X, k, [rs], n_local_trials=n_local_trials)[0]


#: bytes of the (restarts x trials x rows) temporaries one seeding group may use
_SEED_GROUP_BYTES = 256 << 20


def kmeans_plusplus_many(
    X: Any,
    k: int,
    states: list[np.random.RandomState],
    *,
    n_local_trials: int | None = None,
    max_bytes: int = _SEED_GROUP_BYTES,
) -> np.ndarray:
    """k-means++ for several restarts at once -> (R, k, D) float32 host, one per RandomState.

    Restarts seeded from the same rows share every step's distance product, so 20
    seedings cost about one step loop instead of 20 (on a GPU the loop is launch-bound:
    measured 3-5 s for 20 sequential seedings of 10,000 x 768 rows on an H200).  Each
    restart draws its numbers from its own ``RandomState`` in the same order as a
    seeding on its own, and the scalars stay on the device (no synchronisation per step).
    Distances stay float32 (as the product that makes them); potentials and their
    cumulative sums are float64.  Candidates are found by binary search in the
    cumulative potential (``searchsorted``, side=left).
    """
    xp = get_array_module(X)
    n = X.shape[0]
    if n < k:
        raise InputError(f"cannot seed {k} clusters from {n} rows")
    trials = n_local_trials or seeding_trials(k)
    per_restart = trials * n * 12 + n * 16
    group = max(1, max_bytes // per_restart)
    if len(states) > group:
        return np.concatenate(
            [
                kmeans_plusplus_many(
                    X, k, states[i : i + group], n_local_trials=n_local_trials, max_bytes=max_bytes
                )
                for i in range(0, len(states), group)
            ]
        )
    R = len(states)
    on_host = xp is np
    saved = [rs.get_state() for rs in states]
    x_sq = (X * X).sum(axis=1)
    first = np.array([rs.randint(n) for rs in states], np.int64)
    idx = xp.empty((R, k), dtype=xp.int64)
    idx[:, 0] = xp.asarray(first)
    closest = _cand_sq_dists(xp, X, x_sq, X[xp.asarray(first)])  # (R, n) float32
    pot = closest.sum(axis=1, dtype=xp.float64)
    low = pot
    live = np.ones(R, bool)
    rows = xp.arange(R)
    for c in range(1, k):
        if on_host:
            for r in np.flatnonzero(
                live & (pot <= 0)
            ):  # fewer distinct points than k: unused rows in order
                unused = np.setdiff1d(np.arange(n), idx[r, :c])
                idx[r, c:] = unused[: k - c]
                live[r] = False
            if not live.any():
                break
        draws = np.stack(
            [states[r].random_sample(trials) if live[r] else np.zeros(trials) for r in range(R)]
        )
        vals = xp.asarray(draws) * pot[:, None]
        cs = xp.cumsum(closest, axis=1, dtype=xp.float64)
        cand = xp.stack([xp.searchsorted(cs[r], vals[r], side="left") for r in range(R)])
        cand = xp.minimum(cand, n - 1)
        d = _cand_sq_dists(xp, X, x_sq, X[cand.reshape(-1)]).reshape(R, trials, n)
        xp.minimum(d, closest[:, None, :], out=d)
        pots = d.sum(axis=2, dtype=xp.float64)
        best = pots.argmin(axis=1)
        pick = cand[rows, best]
        if on_host:
            idx[live, c] = pick[live]
        else:
            idx[:, c] = pick
        closest = d[rows, best]
        pot = pots[rows, best]
        if not on_host:
            low = xp.minimum(low, pot)
    out = to_numpy(X[idx.reshape(-1)]).reshape(R, k, -1).astype(np.float32)
    if not on_host:  # the rare degenerate restarts: redo them on the host with the same draws
        for r in np.flatnonzero(to_numpy(low) <= 0):
            states[r].set_state(saved[r])
            out[r] = kmeans_plusplus_many(
                to_numpy(X), k, [states[r]], n_local_trials=n_local_trials
            )[0]
    return out


def _seeding_pool(
    sample: np.ndarray, init: Any, init_sample: int, master: np.random.RandomState
) -> np.ndarray:
    """Rows every restart seeds from: the scan's sample, or ``init_sample`` of them drawn once.

    One shared pool (drawn after the restart-sample choice, from the master RandomState)
    lets all restarts seed together (:func:`kmeans_plusplus_many`: one distance product per
    step for every restart instead of one thin, memory-bound product per restart).
    """
    if not isinstance(init, str) or sample.shape[0] <= init_sample:
        return sample
    return sample[np.sort(master.choice(sample.shape[0], init_sample, replace=False))]


def _initial_centers_many(
    init: Any,
    pool: Any,
    k: int,
    dim: int,
    states: list[np.random.RandomState],
    max_bytes: int = _SEED_GROUP_BYTES,
) -> list[np.ndarray]:
    """Starting centres of every restart (one RandomState each), seeded together from ``pool``."""
    if not isinstance(init, str):
        C0 = np.asarray(to_numpy(init), np.float32)
        if C0.shape != (k, dim):
            raise InputError(f"init centres must have shape ({k}, {dim}), got {C0.shape}")
        return [C0 for _ in states]
    n = pool.shape[0]
    if n < k:
        raise InputError(f"cannot seed {k} clusters from {n} rows")
    if init == "random":
        xp = get_array_module(pool)
        return [
            to_numpy(pool[xp.asarray(np.sort(rs.choice(n, k, replace=False)))]).astype(np.float32)
            for rs in states
        ]
    return list(kmeans_plusplus_many(pool, k, states, max_bytes=max_bytes))


# --------------------------------------------------------------------------- Lloyd
class _Accumulator:
    """Per-pass sums (float64, so block order barely matters) and the farthest rows."""

    def __init__(self, k: int, dim: int, n_far: int):
        self.sums = np.zeros((k, dim), np.float64)
        self.counts = np.zeros(k, np.int64)
        self.inertia = 0.0
        self.n_far = n_far
        self.far_d2 = np.empty(0, np.float64)
        self.far_x = np.empty((0, dim), np.float32)
        self.far_label = np.empty(0, np.int64)

    def add(self, st: BlockStats) -> None:
        self.sums += st.sums
        self.counts += st.counts
        self.inertia += st.inertia
        d2 = np.concatenate([self.far_d2, st.far_d2])
        x = np.concatenate([self.far_x, st.far_x])
        lab = np.concatenate([self.far_label, st.far_label])
        if d2.size > self.n_far:
            keep = np.argsort(-d2, kind="stable")[: self.n_far]
            d2, x, lab = d2[keep], x[keep], lab[keep]
        self.far_d2, self.far_x, self.far_label = d2, x, lab

    def new_centers(self, old: np.ndarray) -> tuple[np.ndarray, int]:
        """Means of the clusters; empty clusters take the rows farthest from their centre.

        As in scikit-learn, a relocated row is also taken out of the cluster it
        came from, so the update stays a proper partition and no cluster dies.
        """
        sums, counts = self.sums.copy(), self.counts.copy()
        empty = np.flatnonzero(counts == 0)
        centers = old.astype(np.float64).copy()
        if empty.size:
            order = np.argsort(-self.far_d2, kind="stable")
            used = 0
            for j in empty:
                while used < order.size:
                    cand = order[used]
                    used += 1
                    src = int(self.far_label[cand])
                    if counts[src] > 1 and self.far_d2[cand] > 0:
                        x = self.far_x[cand].astype(np.float64)
                        sums[src] -= x
                        counts[src] -= 1
                        sums[j] = x
                        counts[j] = 1
                        break
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
        return centers.astype(np.float32), int(empty.size)


@dataclass
class _RunResult:
    centers: np.ndarray
    inertia: float
    n_iter: int
    labels: np.ndarray
    n_reseeded: int


def _lloyd(
    source: Any,
    centers: np.ndarray,
    kernel: Any,
    *,
    max_iter: int,
    tol_abs: float,
    on_iter: Callable[[int, float, int], None] | None = None,
) -> _RunResult:
    """Lloyd iterations with scikit-learn's stopping rules, then a final assignment.

    Stops when labels stop changing (strict convergence: no final pass needed) or
    when the squared centre shift is <= ``tol_abs``.  ``n_iter`` counts updates.
    """
    k, dim = centers.shape
    labels = np.full(source.n, -1, np.int32)
    C = np.ascontiguousarray(centers, np.float32)
    n_iter = 0
    reseeded = 0
    strict = False
    inertia = float("inf")
    for it in range(max_iter):
        prepared = kernel.prepare(C)
        acc = _Accumulator(k, dim, n_far=k)
        changed = 0
        for start, xb in source.blocks():
            lab, st = kernel.step(prepared, xb, k, k)
            stop = start + lab.shape[0]
            changed += int(np.count_nonzero(labels[start:stop] != lab))
            labels[start:stop] = lab
            acc.add(st)
        inertia = acc.inertia
        new_C, n_empty = acc.new_centers(C)
        reseeded += n_empty
        shift = float(((new_C.astype(np.float64) - C) ** 2).sum())
        n_iter = it + 1
        if on_iter:
            on_iter(n_iter, inertia, n_empty)
        if it > 0 and changed == 0 and n_empty == 0:
            strict = True  # labels already belong to C and new_C == C up to rounding
            C = new_C
            break
        C = new_C
        if shift <= tol_abs:
            break
    if not strict:
        prepared = kernel.prepare(C)
        inertia = 0.0
        for start, xb in source.blocks():
            lab, part = kernel.assign(prepared, xb)
            labels[start : start + lab.shape[0]] = lab
            inertia += part
    return _RunResult(C, float(inertia), n_iter, labels, reseeded)


def _cuml_run(X: Any, centers: np.ndarray, *, max_iter: int, tol: float, seed: int) -> _RunResult:
    """One cuML KMeans fit from given centres (n_init=1 explicitly: cuML's 'auto' is one run)."""
    import cupy as cp
    from cuml.cluster import KMeans as CuKMeans

    km = CuKMeans(
        n_clusters=centers.shape[0],
        init=cp.asarray(centers),
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
        output_type="cupy",
    )
    km.fit(X)
    labels = cp.asnumpy(km.labels_).astype(np.int32)
    return _RunResult(
        cp.asnumpy(km.cluster_centers_).astype(np.float32),
        float(km.inertia_),
        int(km.n_iter_),
        labels,
        0,
    )


def _sklearn_lloyd() -> Any:
    """scikit-learn's single-run Lloyd function, or None where this scikit-learn lacks it.

    ``KMeans.fit`` around it costs a copy of X (centring), a float32 variance pass for
    ``tol`` and input validation: together about as much as several Lloyd iterations
    on 200,000 x 512 rows.  We already know the tolerance and that X is finite float32,
    so we call the loop itself and centre only where it matters (see :func:`_sklearn_run`).
    """
    try:
        from sklearn.cluster._kmeans import _kmeans_single_lloyd
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    except ImportError:  # pragma: no cover - a future scikit-learn may move them
        return None
    return _kmeans_single_lloyd, _openmp_effective_n_threads


def _sklearn_run(
    X: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int,
    tol_abs: float,
    seed: int,
    mean: np.ndarray | None = None,
    mean_var: float | None = None,
) -> _RunResult:
    """One in-memory Lloyd run from given centres with scikit-learn's fused Cython loop.

    Same stopping rules and tolerance meaning as :func:`_lloyd` (``tol_abs`` is the
    squared centre shift; empty clusters relocated to far points), only faster on the
    CPU because distance, argmin and centre sums happen in one cache-resident pass.
    ``mean``/``mean_var`` (per-feature mean and mean variance of ``X``) are computed
    here when not given.  X is centred (one copy) only when its mean lies farther from
    the origin than its spread, where ``||c||^2 - 2 x.c`` would lose float32 digits;
    scikit-learn always centres.
    """
    fns = _sklearn_lloyd()
    if mean is None or mean_var is None:
        sub = X[:: max(1, X.shape[0] // 65536)]
        mean = sub.mean(axis=0, dtype=np.float64)
        mean_var = float(np.var(sub, axis=0, dtype=np.float64).mean())
    if fns is None:  # pragma: no cover - public API fallback
        from sklearn.cluster import KMeans as SKKMeans

        tol = tol_abs / mean_var if mean_var > 0 else 0.0
        km = SKKMeans(
            n_clusters=centers.shape[0],
            init=np.asarray(centers, np.float32),
            n_init=1,
            max_iter=max_iter,
            tol=tol,
            algorithm="lloyd",
            random_state=seed,
        ).fit(X)
        return _RunResult(
            np.asarray(km.cluster_centers_, np.float32),
            float(km.inertia_),
            int(km.n_iter_),
            km.labels_.astype(np.int32),
            0,
        )
    lloyd, n_threads = fns
    C = np.array(centers, dtype=np.float32, order="C", copy=True)
    shift = None
    if float(np.dot(mean, mean)) > mean_var * X.shape[1]:
        shift = mean.astype(np.float32)
        X = X - shift
        C -= shift
    labels, inertia, C, n_iter = lloyd(
        X, np.ones(X.shape[0], np.float32), C, max_iter=max_iter, tol=tol_abs, n_threads=n_threads()
    )
    if shift is not None:
        C += shift
    return _RunResult(np.asarray(C, np.float32), float(inertia), int(n_iter), labels, 0)


# --------------------------------------------------------------------------- choices
#: restarts whose inertias differ by less than this (relative) are tied; the earliest wins
RESTART_TIE_RTOL = 1e-5


def pick_best_restart(inertias: list[float], rtol: float = RESTART_TIE_RTOL) -> int:
    """Index of the best restart, robust to rounding: the earliest within ``rtol`` of the minimum.

    Restarts that converge to the same partition report inertias that differ only in
    the last bits, and which one is lowest then depends on the CPU, the BLAS, the
    thread count or the reduction order.  Treating near-equal inertias as a tie and
    taking the earliest makes the choice the same everywhere.
    """
    if not inertias:
        raise ValueError("no restarts")
    finite = [v for v in inertias if math.isfinite(v)]
    if not finite:
        return 0
    low = min(finite)
    limit = low + rtol * abs(low)
    return next(i for i, v in enumerate(inertias) if math.isfinite(v) and v <= limit)


def canonical_relabel(labels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters in order of their first row (clusters without rows go last).

    Two runs that find the same partition (another restart, backend, thread count
    or Dask) then write byte-identical label files.  ``labels`` may hold -1 for rows
    that were not clustered; they stay -1.  Returns new int32 labels and the centres
    permuted to match.
    """
    labels = np.asarray(labels)
    k = centers.shape[0]
    valid = labels >= 0
    present, first = np.unique(labels[valid], return_index=True)
    order = present[np.argsort(first, kind="stable")]
    missing = np.setdiff1d(np.arange(k), order, assume_unique=True)
    old_of_new = np.concatenate([order, missing]).astype(np.int64)
    new_of_old = np.empty(k, np.int32)
    new_of_old[old_of_new] = np.arange(k, dtype=np.int32)
    out = np.full(labels.shape, -1, np.int32)
    out[valid] = new_of_old[labels[valid]]
    return out, np.ascontiguousarray(np.asarray(centers)[old_of_new])


# --------------------------------------------------------------------------- estimator
class KMeans:
    """K-means with scikit-learn's estimator contract, on arrays or a feature store.

    Parameters
    ----------
    n_clusters, n_init, max_iter, tol, init, random_state
        As in scikit-learn.  ``tol`` is relative to the mean per-feature variance.
        ``init`` is ``"k-means++"`` (greedy, on a sample of ``init_sample`` rows),
        ``"random"`` (distinct random rows) or an array of starting centres (then
        ``n_init`` is 1).  All restarts draw their seeds from one
        ``RandomState(random_state)``, so a fixed seed gives identical results.
    backend, device
        ``auto|faiss|numpy|cupy|torch|cuml`` and ``auto|cpu|cuda``; see
        :func:`resolve_backend`.  ``backend_`` / ``device_`` record what ran.
    memory_budget
        Bytes (or ``"2GB"``).  A store whose features do not fit is streamed
        chunk by chunk on every iteration instead of being loaded.
    restart_sample
        Rows (int) or fraction (float in (0, 1]) on which the ``n_init`` restarts
        run; the best restart is then refined on all rows.  ``None`` (default) =
        automatic: on when ``n_init > 1`` and the data has at least three times
        ``max(64 * n_clusters, 20000)`` rows (then that many rows are sampled),
        off for smaller inputs.  ``0`` or ``1.0`` turns it off.
    features
        Which features of a store to cluster (``audio``, ``video``, ``audio+video``
        or an extra 2-D array name).
    init_sample
        Rows k-means++ seeding looks at (default ``max(32 * n_clusters, 10000)``).
    precision
        Distance products of the ``torch`` backend's batched restarts on CUDA:
        ``auto`` (= ``tf32``), ``tf32``, ``bf16`` or ``fp32``.  Labels and inertia
        always come from a final exact float32 pass; on the CPU it is ``fp32``.

    Ties: restarts whose inertias agree within ``RESTART_TIE_RTOL`` count as equal
    and the earliest wins; cluster ids are numbered in order of each cluster's
    first row, so the same data and seed give the same labels on any machine.

    Attributes
    ----------
    labels_ : int32, one per input row (for a store: per store row, -1 = excluded)
    cluster_centers_ : (K, D) float32;  inertia_, n_iter_ of the kept solution
    inertias_ : final inertia of every restart (on the restart sample when sampled)
    best_restart_, restart_sample_ (rows used, 0 = all), seeds_, backend_, device_,
    streamed_, n_reseeded_ (empty clusters re-seeded), rows_ (store rows clustered)
    choice_ : dict saying what ran and why (kernel, restart sample, seeding), for reports
    """

    def __init__(
        self,
        n_clusters: int = 300,
        *,
        n_init: int = 20,
        max_iter: int = 100,
        tol: float = 1e-4,
        init: Any = "k-means++",
        random_state: Any = None,
        backend: str = "auto",
        device: str = "auto",
        memory_budget: Any = None,
        restart_sample: Any = None,
        features: str = "audio+video",
        verbose: bool = False,
        init_sample: int | None = None,
        precision: str = "auto",
    ):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.memory_budget = memory_budget
        self.restart_sample = restart_sample
        self.features = features
        self.verbose = verbose
        self.init_sample = init_sample
        self.precision = precision

    # sklearn-style parameter access ------------------------------------------
    _PARAMS = (
        "n_clusters",
        "n_init",
        "max_iter",
        "tol",
        "init",
        "random_state",
        "backend",
        "device",
        "memory_budget",
        "restart_sample",
        "features",
        "verbose",
        "init_sample",
        "precision",
    )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self._PARAMS}

    def set_params(self, **params: Any) -> KMeans:
        for key, value in params.items():
            if key not in self._PARAMS:
                raise ValueError(f"invalid parameter {key!r} for KMeans")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        return (
            f"KMeans(n_clusters={self.n_clusters}, n_init={self.n_init}, backend={self.backend!r})"
        )

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 1:
            raise InputError(f"n_clusters must be a positive integer, got {self.n_clusters!r}")
        if self.n_init < 1 or self.max_iter < 1:
            raise InputError("n_init and max_iter must be >= 1")
        if self.tol < 0:
            raise InputError(f"tol must be >= 0, got {self.tol}")
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise InputError(f"init must be 'k-means++', 'random' or an array, got {self.init!r}")

    def _restart_rows(self, n: int, backend: str | None = None, device: str | None = None) -> int:
        """Rows the restarts run on (0 = all rows)."""
        rs_ = self.restart_sample
        if self.n_init <= 1 or isinstance(self.init, np.ndarray) or not isinstance(self.init, str):
            return 0
        if rs_ is None and backend == "torch" and str(device).startswith("cuda"):
            return 0  # batched restarts on the GPU are cheap enough to use every row
        if rs_ is None:
            auto = max(64 * self.n_clusters, 20000)
            return auto if n >= 3 * auto else 0
        if isinstance(rs_, float):
            if not 0 <= rs_ <= 1:
                raise InputError(f"restart_sample fraction must be in [0, 1], got {rs_}")
            rows = int(round(rs_ * n))
        else:
            rows = int(rs_)
        if rows <= 0 or rows >= n:
            return 0
        if rows < 4 * self.n_clusters:
            raise InputError(
                f"a restart sample of {rows} rows is too small for K={self.n_clusters} "
                f"(at least {4 * self.n_clusters}); give a fraction such as 0.2, or off"
            )
        return rows

    def _explain(
        self, backend: str, device: str, n: int, n_init: int, restart_rows: int, pool_rows: int
    ) -> dict[str, Any]:
        """What ``auto`` chose and why, in words (written to label files and ``--json``)."""
        k = int(self.n_clusters)
        if backend == "sklearn" and not self.streamed_:
            kernel = (
                "scikit-learn's fused Lloyd loop (per 256-row chunk: sgemm, argmin and centre sums "
                "while the chunk is in cache)"
            )
        elif backend == "torch" and not self.streamed_:
            kernel = f"torch on {device}, all restarts batched (one distance product per iteration for every restart)"
        elif self.streamed_:
            kernel = f"{'NumPy sgemm' if backend == 'sklearn' else backend} block kernel, blocks read from the store every pass"
        else:
            kernel = f"{backend} block kernel (blocked distance product + argmin)"
        if self.backend == "auto":
            why_backend = (
                "auto on a GPU: torch on CUDA (verified on real hardware)"
                if device.startswith("cuda")
                else "auto on the CPU: scikit-learn's loop, the fastest CPU kernel measured by bench/kmeans.py"
            )
        else:
            why_backend = f"asked for backend {self.backend!r}"
        auto_rows = max(64 * k, 20000)
        if restart_rows:
            how = "auto" if self.restart_sample is None else f"asked for {self.restart_sample!r}"
            why_sample = (
                f"{how}: the {n_init} restarts ran on {restart_rows} random rows; the best one was then "
                f"refined on all {n} rows (same seeding, measured equal quality: bench/kmeans_quality.py)"
            )
        elif n_init <= 1 or not isinstance(self.init, str):
            why_sample = "off: a single run (n_init=1 or given initial centres)"
        elif self.restart_sample is not None:
            why_sample = f"off: asked for {self.restart_sample!r}"
        elif backend == "torch" and device.startswith("cuda"):
            why_sample = "off: batched restarts on the GPU are cheap enough to use every row"
        else:
            why_sample = f"off: {n} rows < 3 x {auto_rows} (the automatic sample size), so restarts use every row"
        seeding = (
            f"greedy k-means++, {seeding_trials(k)} candidates per step (2 + 3 ln K), from {pool_rows} "
            "sampled rows, all restarts seeded together"
            if isinstance(self.init, str) and self.init == "k-means++"
            else ("random rows" if isinstance(self.init, str) else "given initial centres")
        )
        return {
            "backend": backend,
            "device": device,
            "kernel": kernel,
            "why_backend": why_backend,
            "restart_sample": int(restart_rows),
            "why_restart_sample": why_sample,
            "seeding": seeding,
            "streamed": bool(self.streamed_),
        }

    # --------------------------------------------------------------------- fit
    def fit(self, source: Any, y: Any = None, *, progress: ProgressFn | None = None) -> KMeans:
        """Cluster ``source`` (a FeatureStore or an (N, D) NumPy/CuPy/torch array)."""
        from featstore.store.core import FeatureStore

        self._validate()
        t0 = time.perf_counter()
        k = int(self.n_clusters)
        backend, device = resolve_backend(self.backend, self.device)
        kernel = _make_kernel(backend, device)
        if isinstance(self.random_state, np.random.RandomState):
            master = self.random_state
        else:
            master = np.random.RandomState(self.random_state)
        budget = parse_bytes(self.memory_budget)
        init_sample = int(self.init_sample or max(32 * k, 10000))
        emit = progress or (lambda ev: None)

        store_rows = None
        n_total = None
        if isinstance(source, FeatureStore):
            from featstore.store.features import FeatureView

            view = FeatureView(source, self.features)
            n_total = source.n_rows
            n_upper = int(view.valid_mask().sum())
            # in memory: the float32 rows, their ids, fixed buffers, the scan's two float64
            # block temporaries, and scikit-learn's own centred copy of X (copy_x)
            resident = n_upper * (view.dim * 4 + 16) * (2 if backend == "sklearn" else 1)
            fits = (
                budget is None
                or resident
                + _fixed_bytes(k, view.dim, init_sample)
                + 2 * MEMORY_BLOCK_ROWS * view.dim * 8
                <= budget
            )
            if fits:
                rows, X = _load_view(view, n_upper)
                full: Any = _ArraySource(kernel.put(X))
                self.streamed_ = False
            else:
                rpb, sample_cap = _stream_plan(budget, view, k, init_sample, source.chunk_rows)
                init_sample = min(init_sample, sample_cap)
                full = _StoreSource(view, kernel, rpb, n=-1)
                self.streamed_ = True
                rows = None
            store_rows = rows
        else:
            X = kernel.adopt(_as_float32_2d(source))
            check_finite(X, what="input array")
            full = _ArraySource(X)
            self.streamed_ = False
        n_guess = full.n if full.n >= 0 else n_upper
        restart_rows = self._restart_rows(n_guess, backend, device)
        sample_size = max(init_sample, restart_rows)
        if self.streamed_:
            sample_size = min(sample_size, max(init_sample, sample_cap))
            restart_rows = min(restart_rows, sample_size) if restart_rows else 0

        emit({"event": "scan", "streamed": self.streamed_})
        if self.streamed_:
            scan = _scan(
                view.iter_blocks(full.rows_per_block), kernel, full.dim, sample_size, master
            )
            full.n = scan.n
            store_rows = scan.rows if scan.rows is not None else np.empty(0, np.int64)
        else:
            scan = _scan(
                ((None, xb) for _, xb in full.blocks()), kernel, full.dim, sample_size, master
            )
        n = scan.n
        if n < k:
            where = (
                f"{source.path} ({self.features})" if isinstance(source, FeatureStore) else "input"
            )
            raise InputError(f"{where}: {n} usable rows, fewer than n_clusters={k}")
        tol_abs = float(self.tol) * scan.mean_var
        full_moments = {"mean": scan.mean, "mean_var": scan.mean_var}

        # restarts ---------------------------------------------------------------
        explicit_init = not isinstance(self.init, str)
        n_init = 1 if explicit_init else int(self.n_init)
        seeds = master.randint(0, 2**31 - 1, size=n_init)
        if restart_rows and restart_rows < n:
            sample_host = (
                scan.sample
                if scan.sample.shape[0] <= restart_rows
                else scan.sample[
                    np.sort(master.choice(scan.sample.shape[0], restart_rows, replace=False))
                ]
            )
            restart_src: Any = _ArraySource(kernel.put(sample_host))
        else:
            restart_rows = 0
            restart_src = full
        # seeding runs where xp can: CuPy for cupy/cuml, the host for numpy/faiss/torch/sklearn
        pool_host = _seeding_pool(scan.sample, self.init, init_sample, master)
        seed_pool = kernel.put(pool_host) if kernel.name == "cupy" else pool_host
        if kernel.name == "torch" and str(device).startswith("cuda") and cupy_usable():
            import cupy

            seed_pool = cupy.asarray(
                pool_host
            )  # k-means++ is written against xp; host seeding is slow

        use_cuml = backend == "cuml"
        use_sklearn = backend == "sklearn"
        use_batched = backend == "torch" and isinstance(restart_src, _ArraySource)
        runs: list[_RunResult] = []
        t_seed = time.perf_counter()
        emit({"event": "seeding", "n_init": n_init, "rows": int(seed_pool.shape[0])})
        states = [np.random.RandomState(int(seeds[i])) for i in range(n_init)]
        # all restarts together; a memory budget caps the seeding temporaries at a tenth of it
        seed_bytes = (
            _SEED_GROUP_BYTES if budget is None else max(1, min(_SEED_GROUP_BYTES, budget // 10))
        )
        C0s = _initial_centers_many(self.init, seed_pool, k, full.dim, states, seed_bytes)
        self.seeding_seconds_ = time.perf_counter() - t_seed
        if use_batched:  # every restart in one distance product per iteration
            emit({"event": "restart", "restart": 0, "n_init": n_init, "batched": True})

            def on_batched_iter(r: int, it: int, inertia: float, n_empty: int) -> None:
                emit(
                    {
                        "event": "iter",
                        "restart": r,
                        "iter": it,
                        "max_iter": self.max_iter,
                        "inertia": inertia,
                        "reseeded": n_empty,
                    }
                )

            runs = [
                _RunResult(r.centers, r.inertia, r.n_iter, r.labels, r.n_reseeded)
                for r in batched_lloyd(
                    restart_src.X,
                    np.stack(C0s),
                    max_iter=self.max_iter,
                    tol_abs=tol_abs,
                    precision=self.precision,
                    on_iter=on_batched_iter,
                )
            ]
            for i, run in enumerate(runs):
                emit(
                    {
                        "event": "restart_done",
                        "restart": i,
                        "inertia": run.inertia,
                        "n_iter": run.n_iter,
                    }
                )
        for i in range(0 if use_batched else n_init):
            C0 = C0s[i]
            emit({"event": "restart", "restart": i, "n_init": n_init})

            def on_iter(it: int, inertia: float, n_empty: int, _i: int = i) -> None:
                emit(
                    {
                        "event": "iter",
                        "restart": _i,
                        "iter": it,
                        "max_iter": self.max_iter,
                        "inertia": inertia,
                        "reseeded": n_empty,
                    }
                )

            if use_cuml and isinstance(restart_src, _ArraySource):
                run = _cuml_run(
                    restart_src.X, C0, max_iter=self.max_iter, tol=self.tol, seed=int(seeds[i])
                )
            elif use_sklearn and isinstance(restart_src, _ArraySource):
                run = _sklearn_run(
                    restart_src.X,
                    C0,
                    max_iter=self.max_iter,
                    tol_abs=tol_abs,
                    seed=int(seeds[i]),
                    **({} if restart_rows else full_moments),
                )
            else:
                run = _lloyd(
                    restart_src,
                    C0,
                    kernel,
                    max_iter=self.max_iter,
                    tol_abs=tol_abs,
                    on_iter=on_iter,
                )
            runs.append(run)
            emit(
                {
                    "event": "restart_done",
                    "restart": i,
                    "inertia": run.inertia,
                    "n_iter": run.n_iter,
                }
            )
        inertias = [run.inertia for run in runs]
        best_i = pick_best_restart(inertias)
        best = runs[best_i]
        del runs
        if restart_rows:
            emit({"event": "refine", "rows": n})

            def on_refine(it: int, inertia: float, n_empty: int) -> None:
                emit(
                    {
                        "event": "iter",
                        "restart": "refine",
                        "iter": it,
                        "max_iter": self.max_iter,
                        "inertia": inertia,
                        "reseeded": n_empty,
                    }
                )

            if use_cuml and isinstance(full, _ArraySource):
                final = _cuml_run(
                    full.X,
                    best.centers,
                    max_iter=self.max_iter,
                    tol=self.tol,
                    seed=int(seeds[best_i]),
                )
            elif backend == "torch" and isinstance(full, _ArraySource):
                r = batched_lloyd(
                    full.X,
                    best.centers[None],
                    max_iter=self.max_iter,
                    tol_abs=tol_abs,
                    precision=self.precision,
                    on_iter=lambda _r, it, inertia, n_empty: on_refine(it, inertia, n_empty),
                )[0]
                final = _RunResult(r.centers, r.inertia, r.n_iter, r.labels, r.n_reseeded)
            elif use_sklearn and isinstance(full, _ArraySource):
                final = _sklearn_run(
                    full.X,
                    best.centers,
                    max_iter=self.max_iter,
                    tol_abs=tol_abs,
                    seed=int(seeds[best_i]),
                    **full_moments,
                )
            else:
                final = _lloyd(
                    full,
                    best.centers,
                    kernel,
                    max_iter=self.max_iter,
                    tol_abs=tol_abs,
                    on_iter=on_refine,
                )
            final.n_reseeded += best.n_reseeded
        else:
            final = best

        # results ----------------------------------------------------------------
        # cluster ids numbered canonically, so equal partitions give equal label files
        final_labels, final_centers = canonical_relabel(final.labels, final.centers)
        if store_rows is not None:
            labels = np.full(n_total, -1, np.int32)
            labels[store_rows] = final_labels
            self.rows_ = store_rows
        else:
            labels = final_labels
            self.rows_ = None
        self.labels_ = labels
        self.cluster_centers_ = final_centers
        self.inertia_ = float(final.inertia)
        self.n_iter_ = int(final.n_iter)
        self.inertias_ = [float(v) for v in inertias]
        self.best_restart_ = best_i
        self.restart_sample_ = int(restart_rows)
        self.seeds_ = [int(s) for s in seeds]
        self.choice_ = self._explain(
            backend, str(device), int(n), n_init, int(restart_rows), int(seed_pool.shape[0])
        )
        self.backend_ = backend
        self.device_ = device
        self.n_reseeded_ = int(final.n_reseeded)
        self.n_features_in_ = int(full.dim)
        self.n_samples_ = int(n)
        self.fit_seconds_ = time.perf_counter() - t0
        emit({"event": "done", "inertia": self.inertia_, "seconds": self.fit_seconds_})
        return self

    def fit_predict(self, source: Any, y: Any = None) -> np.ndarray:
        return self.fit(source).labels_

    def predict(self, X: Any) -> np.ndarray:
        """Nearest learned centre for every row of an array, or of a store (-1 = excluded)."""
        from featstore.store.core import FeatureStore

        if not hasattr(self, "cluster_centers_"):
            raise InputError("this KMeans is not fitted yet; call fit() first")
        kernel = _make_kernel(self.backend_, self.device_)
        prepared = kernel.prepare(self.cluster_centers_)
        if isinstance(X, FeatureStore):
            from featstore.store.features import FeatureView

            out = np.full(X.n_rows, -1, np.int32)
            for rows, xb in FeatureView(X, self.features).iter_blocks(MEMORY_BLOCK_ROWS):
                out[rows] = kernel.assign(prepared, kernel.put(xb))[0]
            return out
        Xa = kernel.adopt(_as_float32_2d(X))
        if Xa.shape[1] != self.cluster_centers_.shape[1]:
            raise InputError(
                f"X has {Xa.shape[1]} features, the model was fitted on {self.cluster_centers_.shape[1]}"
            )
        check_finite(Xa, what="input array")
        out = np.empty(Xa.shape[0], np.int32)
        for s, xb in _ArraySource(Xa).blocks():
            out[s : s + xb.shape[0]] = kernel.assign(prepared, xb)[0]
        return out


# --------------------------------------------------------------------------- planning
def _fixed_bytes(k: int, dim: int, sample_rows: int) -> int:
    """Memory a run needs besides the data blocks: centres, sums, far rows, seeding sample."""
    return int(k * dim * (4 * 4 + 8 * 2) + sample_rows * dim * 4 * 3 + 8 * sample_rows * 8)


_READER_RESERVE = 384 << 10


def _stream_plan(
    budget: int, view: Any, k: int, init_sample: int, chunk_rows: int
) -> tuple[int, int]:
    """Rows per streamed block and the largest in-memory sample that fit ``budget``.

    Per row, every run keeps its label, the row index and the view's masks (24 B).
    A block costs about 8x its float32 size while in flight (the queued block, the
    one being read: stored dtype + float32 copies + normalised parts + concatenation,
    the one being assigned) plus its distances to the K centres; a tenth of the budget
    plus ``_READER_RESERVE`` is left for the store reader's own buffers (zarr's
    asyncio machinery and masks, measured at ~0.3 MB with tracemalloc).  The sample used for
    seeding (and for the restarts) gets at most 30 % of what is left.
    """
    dim = view.dim
    n_upper = int(view.valid_mask().sum())
    avail = int(budget * 0.9) - _READER_RESERVE - n_upper * 24 - k * dim * 48
    sample_cap = max(0, int(avail * 0.3)) // (dim * 4 * 3 + 64)
    sample_rows = min(init_sample, sample_cap)
    avail -= sample_rows * (dim * 4 * 3 + 64)
    per_row = dim * 4 * 8 + k * 4 * 2
    rows = (max(avail, 0) // per_row) // chunk_rows * chunk_rows
    if rows < chunk_rows or sample_cap < k:
        need = budget - avail + chunk_rows * per_row + max(0, k - sample_rows) * (dim * 12 + 64)
        raise InputError(
            f"memory budget {budget} bytes is too small to stream {view.store.path}: one chunk "
            f"({chunk_rows} rows x {dim} features) plus the run's bookkeeping needs about {need} bytes"
        )
    return int(rows), int(sample_cap)


def _load_view(view: Any, n_upper: int) -> tuple[np.ndarray, np.ndarray]:
    """All valid rows into one preallocated float32 array (peak = data + one block)."""
    X = np.empty((n_upper, view.dim), np.float32)
    rows = np.empty(n_upper, np.int64)
    pos = 0
    for r, x in view.iter_blocks(MEMORY_BLOCK_ROWS):
        X[pos : pos + x.shape[0]] = x
        rows[pos : pos + x.shape[0]] = r
        pos += x.shape[0]
    return rows[:pos], X[:pos]
