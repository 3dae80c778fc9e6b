"""``cluster_store``: a store's features -> k-means -> an aligned, versioned label file.

What ``diccae cluster`` and the trainer's re-clustering run: open and check the store,
the output name and the previous round *before* the long fit, cluster (one machine:
:class:`featstore.kmeans.KMeans`; Dask: :func:`featstore.kmeans.kmeans_dask`, the same
restarts driver), align ids to the previous round, then write the label file, its
metadata (with ``choice``: what ran and why) and the cluster-size plot.  Both paths
share :func:`finish_cluster_run`, so they write identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featstore.common.fileio import check_output_file
from featstore.errors import InputError
from featstore.kmeans import KMeans, kmeans_dask
from featstore.labels.align import agreement_metrics, align_to_previous
from featstore.labels.files import (
    LabelFileMeta,
    cluster_sizes,
    plot_cluster_sizes,
    plot_path,
    read_label_file,
    write_label_file,
)
from featstore.progress import ProgressFn
from featstore.store.core import FeatureStore


@dataclass
class ClusterResult:
    labels: np.ndarray
    meta: LabelFileMeta
    path: Path
    agreement: dict | None
    centers: np.ndarray | None = None
    sizes: np.ndarray | None = None
    plot: Path | None = None


@dataclass(frozen=True)
class DaskTarget:
    """Where :func:`cluster_store` runs on Dask: a scheduler address (``tcp://host:8786``,
    ``local:N``) or a ``distributed.Client``; ``persist=False`` re-reads the store each pass."""

    scheduler: str | None = None
    client: Any = None
    persist: bool = True


def cluster_store(
    store: FeatureStore | str | Path,
    *,
    out: str | Path,
    k: int = 300,
    n_init: int = 20,
    seed: int | None = 0,
    features: str = "audio+video",
    backend: str = "auto",
    device: str = "auto",
    align_to: str | Path | None = None,
    round: int | None = None,
    parent: str | Path | None = None,
    memory_budget: Any = None,
    restart_sample: Any = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    progress: ProgressFn | None = None,
    plot: bool = True,
    dask: DaskTarget | None = None,
) -> ClusterResult:
    """Cluster a store's features and write a versioned label file (what `diccae cluster` runs).

    The trainer calls it for re-clustering with ``features=<fused array name>``,
    ``align_to=<previous round's file>`` so ids stay stable.  ``round`` defaults to
    the previous round + 1 when aligning, else 0; ``parent`` defaults to ``align_to``.
    ``progress`` receives ``KMeans.fit``'s progress updates.  With ``dask`` the fit runs
    on a Dask cluster (:func:`featstore.kmeans.kmeans_dask`, the same restarts driver;
    ``device`` and ``memory_budget`` do not apply): same label file, metadata and plot,
    ``meta.backend`` ``dask-cpu`` or ``dask-cuml`` and ``meta.extra["dask"]`` naming the
    scheduler and workers.
    """
    store, out, previous, prev_meta = prepare_cluster_run(store, out, align_to)
    extra = None
    if dask is None:
        km: Any = KMeans(
            k,
            n_init=n_init,
            max_iter=max_iter,
            tol=tol,
            random_state=seed,
            backend=backend,
            device=device,
            memory_budget=memory_budget,
            restart_sample=restart_sample,
            features=features,
        ).fit(store, progress=progress)
    else:
        if memory_budget is not None:
            raise InputError("memory_budget does not apply on Dask; use persist=False")
        km = kmeans_dask(
            store,
            k=k,
            n_init=n_init,
            seed=seed,
            features=features,
            scheduler=dask.scheduler,
            client=dask.client,
            max_iter=max_iter,
            tol=tol,
            restart_sample=restart_sample,
            backend=backend,
            persist=dask.persist,
            progress=progress,
        )
        where = {"scheduler": dask.scheduler or "client", "n_workers": km.n_workers_}
        extra = {"dask": {**where, "persist": dask.persist}}
    return finish_cluster_run(
        store,
        km,
        out,
        k=k,
        n_init=n_init,
        seed=seed,
        features=features,
        align_to=align_to,
        previous=previous,
        prev_meta=prev_meta,
        round=round,
        parent=parent,
        max_iter=max_iter,
        tol=tol,
        plot=plot,
        extra=extra,
    )


def cluster_store_dask(
    store: FeatureStore | str | Path,
    *,
    scheduler: str | None = None,
    client: Any = None,
    persist: bool = True,
    **options: Any,
) -> ClusterResult:
    """:func:`cluster_store` on a Dask cluster (``options``: its keyword arguments)."""
    return cluster_store(store, dask=DaskTarget(scheduler, client, persist), **options)


def prepare_cluster_run(
    store: FeatureStore | str | Path, out: str | Path, align_to: str | Path | None
) -> tuple[FeatureStore, Path, np.ndarray | None, LabelFileMeta | None]:
    """Open the store and check the output name and previous round *before* the long fit."""
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    out = Path(out)
    if out.suffix != ".npy":
        raise InputError(f"label file {out} must end in .npy")
    check_output_file(out, store=store)
    previous = prev_meta = None
    if align_to is not None:
        previous, prev_meta = read_label_file(align_to, store)
    return store, out, previous, prev_meta


def finish_cluster_run(
    store: FeatureStore,
    km: Any,
    out: Path,
    *,
    seed: int | None,
    features: str,
    align_to: str | Path | None,
    previous: np.ndarray | None,
    prev_meta: LabelFileMeta | None,
    round: int | None,
    parent: str | Path | None,
    k: int,
    n_init: int,
    max_iter: int,
    tol: float,
    plot: bool,
    extra: dict[str, Any] | None = None,
) -> ClusterResult:
    """Align a fitted estimator's labels to the previous round, then write the label file,
    its metadata and the size plot.  ``km`` is a fitted ``KMeans`` or a ``DaskKMeansResult``
    (the same attributes); ``k``, ``n_init``, ``max_iter``, ``tol`` are recorded as asked."""
    labels = km.labels_.astype(np.int32)
    centers = km.cluster_centers_
    alignment = None
    if previous is not None and prev_meta is not None:
        labels, centers, alignment = align_to_previous(labels, centers, previous, k, prev_meta.k)
    truth = store.labels
    agreement = agreement_metrics(labels, truth) if (truth >= 0).any() else None
    if round is None:
        round = (int(prev_meta.round) + 1) if prev_meta is not None else 0
    if parent is None and align_to is not None:
        parent = align_to
    meta = LabelFileMeta(
        k=k,
        inertia=km.inertia_,
        inertias=km.inertias_,
        n_iter=km.n_iter_,
        seed=seed,
        backend=km.backend_,
        features=features,
        store_fingerprint=store.fingerprint,
        round=int(round),
        parent=str(parent) if parent is not None else None,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        device=km.device_,
        restart_sample=km.restart_sample_,
        best_restart=km.best_restart_,
        n_reseeded=km.n_reseeded_,
        seconds=round_seconds(km.fit_seconds_),
        aligned_to=str(align_to) if align_to is not None else None,
        alignment=alignment,
        agreement=agreement,
        choice=km.choice_,
        store_path=str(store.path),
        extra={
            "streamed": bool(km.streamed_),
            "n_features": int(km.n_features_in_),
            **(extra or {}),
        },
    )
    write_label_file(out, labels, meta)
    png = None
    if plot:
        png = plot_cluster_sizes(
            labels, k, plot_path(out), title=f"{out.name}: K={k}, {features}, round {meta.round}"
        )
    return ClusterResult(
        labels, meta, out, agreement, centers=centers, sizes=cluster_sizes(labels, k), plot=png
    )


def round_seconds(s: float) -> float:
    return float(f"{s:.3f}")
