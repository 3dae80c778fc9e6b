"""The confusion degree's entry points: an in-memory array, or a feature store.

:func:`confusion_degree` takes (N, D) features and labels (NumPy, CuPy or torch);
:func:`confusion_from_store` streams a store's feature view block by block, so a store
larger than memory works.  Both build a block source and hand it to the two-pass engine
(:mod:`featstore.confusion.engine`); the report and pictures are elsewhere
(:mod:`featstore.confusion.report`, :mod:`featstore.confusion.plots`).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from featstore.common.backend import get_array_module, to_numpy
from featstore.confusion.blocks import Block, Loader, default_block_rows
from featstore.confusion.engine import run_engine
from featstore.confusion.result import ConfusionResult
from featstore.errors import InputError
from featstore.progress import ProgressFn, ProgressTask


def _as_array(a: Any):
    """NumPy/CuPy arrays as they are; torch tensors via DLPack (GPU) or NumPy (CPU)."""
    if type(a).__module__.startswith("torch"):
        if a.is_cuda:
            import cupy as cp

            return cp.from_dlpack(a.detach().contiguous())
        return a.detach().cpu().numpy()
    if type(a).__module__.startswith("cupy"):
        return a
    return np.asarray(a)


def confusion_degree(
    X: Any,
    y: Any,
    *,
    n_components: int | None = 2,
    coverage: float = 0.95,
    num_classes: int | None = None,
    block_rows: int | None = None,
    workers: int | None = None,
) -> ConfusionResult:
    """Confusion degree matrix (Eq. 2) of features ``X`` (N, D) under labels ``y`` (N,).

    NumPy or CuPy input (torch tensors are accepted too); rows with ``y < 0`` are
    excluded.  Without ``num_classes`` the classes are the distinct labels present
    (``result.classes`` says which); with it, M is indexed by label value 0..C-1 and
    absent classes get NaN rows (see the module docstring) — what the trainer wants.
    ``workers`` threads share the row blocks (default: as many as the BLAS may use);
    ``block_rows`` defaults to :func:`~featstore.confusion.blocks.default_block_rows`.
    """
    X = _as_array(X)
    xp = get_array_module(X)
    y = xp.asarray(_as_array(y))
    if X.ndim != 2:
        raise InputError(f"features must be 2-D (N, D), got shape {tuple(X.shape)}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InputError(
            f"labels must be 1-D with one entry per row ({X.shape[0]}), got shape {tuple(y.shape)}"
        )
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and bool(xp.all(y == xp.round(y))):
            y = y.astype(xp.int64)
        else:
            raise InputError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(xp.int64)
    if X.dtype.kind != "f":
        X = X.astype(xp.float32)
    bad = ~xp.isfinite(X).all(axis=1) & (y >= 0)
    if bool(bad.any()):
        rows = to_numpy(xp.flatnonzero(bad))[:5].tolist()
        raise InputError(f"non-finite feature values at rows {rows}")
    if num_classes is not None:
        if int(num_classes) < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        too_big = y >= num_classes
        if bool(too_big.any()):
            r = int(to_numpy(xp.flatnonzero(too_big))[0])
            raise InputError(
                f"label {int(y[r])} at row {r} is outside 0..{num_classes - 1} (num_classes={num_classes})"
            )
        values = xp.arange(int(num_classes))
        index = y
    else:
        values = xp.unique(y[y >= 0])
        index = xp.where(y >= 0, xp.searchsorted(values, xp.maximum(y, 0)), -1)
    C = int(values.shape[0])
    step = int(block_rows) if block_rows else default_block_rows(xp)

    def load(s: int) -> Block | None:
        xb, cb = X[s : s + step], index[s : s + step]
        m = cb >= 0
        if not bool(m.all()):
            xb, cb = xb[m], cb[m]
        return (xb, cb, None) if xb.shape[0] else None

    def blocks(_pass: int) -> Iterator[Loader]:
        for s in range(0, X.shape[0], step):
            yield functools.partial(load, s)

    if C == 0:
        raise InputError("no rows to analyse: every label is negative (excluded)")
    result, keep = run_engine(
        xp,
        blocks,
        dim=int(X.shape[1]),
        n_classes=C,
        n_components=n_components,
        coverage=coverage,
        compact=False,
        workers=workers,
    )
    result.classes = to_numpy(values).astype(np.int64)[keep]
    return result


def _default_memory_budget() -> int:
    """Bytes of features to keep between the two passes: a quarter of RAM, at most 8 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(min(8 << 30, total // 4))


def confusion_from_store(
    store: Any,
    labels: np.ndarray,
    *,
    features: str = "audio+video",
    split: str | Sequence[str] | None = None,
    n_components: int | None = 2,
    coverage: float = 0.95,
    chunked: bool = True,
    num_classes: int | None = None,
    memory_budget: int | None = None,
    device: str = "cpu",
    keep_plane: bool = False,
    progress: ProgressFn | None = None,
    block_rows: int | None = None,
    workers: int | None = None,
) -> ConfusionResult:
    """Confusion degree of a store's ``features`` under per-row ``labels``.

    ``labels`` has one entry per store row (-1 = excluded).  Rows that failed, lack a
    needed modality, have NaN extra features or are outside ``split`` are excluded
    too.  ``chunked`` streams the feature array block by block (two passes); the
    blocks read in pass 1 are kept for pass 2 when they fit ``memory_budget`` bytes
    (default a quarter of RAM, at most 8 GiB), otherwise pass 2 reads the store again.
    ``chunked=False`` loads every valid row and calls :func:`confusion_degree`.
    ``device="cuda"`` runs the maths with CuPy on the GPU.  ``block_rows`` rows (whole
    store chunks; default per device, :func:`~featstore.confusion.blocks.default_block_rows`)
    are read at a time, by ``workers`` threads (default: as many as the BLAS may use;
    each then runs its BLAS/torch calls on one thread).  ``progress`` gets
    a :class:`~featstore.progress.ProgressUpdate` per block, one task per pass.
    """
    from featstore.common.backend import array_module_for, resolve_device
    from featstore.store.core import MODALITIES, as_store, row_labels
    from featstore.store.features import COMBINED, FeatureView, assemble_block, feature_view

    store = as_store(store)
    labels = row_labels(store, labels)
    view = feature_view(store, features)
    use = labels >= 0
    if split is not None:
        wanted = [split] if isinstance(split, str) else list(split)
        splits = np.asarray([str(s) for s in store.splits.tolist()], dtype=object)
        known = sorted(set(splits.tolist()))
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise InputError(f"{store.path}: no rows in split {unknown}; splits present: {known}")
        use &= np.isin(splits, wanted)
    use &= view.valid_mask()
    xp = array_module_for(resolve_device(device))

    if not chunked:
        rows, X = view.load()
        keep_rows = use[rows]
        rows, X = rows[keep_rows], X[keep_rows]
        res = confusion_degree(
            xp.asarray(X),
            xp.asarray(labels[rows]),
            n_components=n_components,
            coverage=coverage,
            num_classes=num_classes,
        )
        res.rows = rows
        return res

    if num_classes is not None:
        if labels.max(initial=-1) >= num_classes:
            r = int(np.flatnonzero(labels >= num_classes)[0])
            raise InputError(f"label {labels[r]} at row {r} is outside 0..{num_classes - 1}")
        values = np.arange(num_classes)
    else:
        values = np.unique(labels[use])
    if values.size == 0:
        raise InputError(
            f"{store.path}: no rows to analyse (every row is unlabelled, failed, missing a modality or outside the split)"
        )
    index = np.full(store.n_rows, -1, np.int64)
    index[use] = np.searchsorted(values, labels[use])
    budget = _default_memory_budget() if memory_budget is None else int(memory_budget)
    if store.dtype == "float16":
        # the view casts float16 through torch: import it before the workers set its threads
        import torch  # noqa: F401

    parts = list(MODALITIES) if features == COMBINED else [features]
    view = FeatureView(store, features)  # store arrays with integrity checks, or a run's features
    take = index >= 0  # valid, labelled, in the split

    def load(s: int, e: int, keep: np.ndarray) -> Block | None:
        # assemble_block is the one definition of the view's numbers (cast, L2 per modality)
        rows, x = assemble_block(
            [view.read_part(p, s, e) for p in parts],
            keep,
            s,
            combined=features == COMBINED,
            extra=parts[0] not in MODALITIES,
            what=f"{features} of {store.path}",
        )
        if rows.size == 0:
            return None
        return xp.asarray(x), xp.asarray(index[rows]), rows

    def blocks(pass_no: int) -> Iterator[Loader]:
        """Whole chunks, grouped up to ``block_rows`` rows: each decompressed once a pass."""
        ranges = store.shard_ranges()
        rows = int(block_rows) if block_rows else default_block_rows(xp)
        step = max(1, rows // store.chunk_rows)
        groups = []
        for i in range(0, len(ranges), step):
            s, e = ranges[i][0], ranges[min(i + step, len(ranges)) - 1][1]
            keep = np.flatnonzero(take[s:e])
            if keep.size:
                groups.append((s, e, functools.partial(load, s, e, keep)))
        yield from _counted(groups, progress, pass_no)

    result, keep = run_engine(
        xp,
        blocks,
        dim=view.dim,
        n_classes=int(values.size),
        n_components=n_components,
        coverage=coverage,
        compact=num_classes is None,
        keep_plane=keep_plane,
        keep_rows=True,
        cache=int(take.sum()) * view.dim * 4 <= budget,  # the blocks' float32 bytes
        workers=workers,
    )
    result.classes = values[keep]
    return result


def _counted(
    groups: Sequence[tuple[int, int, Loader]], progress: ProgressFn | None, pass_no: int
) -> Iterator[Loader]:
    """The loaders of ``groups`` ((start, stop, loader)), reporting rows as blocks finish.

    Blocks finish in any order on several workers, so the count is kept under a lock and
    the task closes when the last block's rows are in (not when the last loader is taken).
    """
    if progress is None:
        for _s, _e, load in groups:
            yield load
        return
    total = sum(e - s for s, e, _load in groups)
    task = ProgressTask(
        progress,
        f"confusion-pass-{pass_no}",
        total=total,
        description=f"confusion pass {pass_no}/2 (rows)",
    )
    t0 = time.perf_counter()
    lock = threading.Lock()

    def counted(s: int, e: int, load: Loader) -> Any:
        block = load()
        with lock:
            done = task.completed + (e - s)  # the rate includes this block
            task.advance(e - s, info=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} rows/s")
            if task.completed >= total:
                task.close()
        return block

    for s, e, load in groups:
        yield functools.partial(counted, s, e, load)
