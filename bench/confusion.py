"""Benchmark: confusion degree of a store against the I/O floor and a naive reference.

    python bench/confusion.py                       # N=200k, D=512 (256 audio + 256 video), C=300
    python bench/confusion.py --rows 20000 --classes 50

Measured in the same run, on the same store (features audio+video, the default):

* floor      - one plain read of the audio and video arrays, chunk by chunk;
* ours       - ``confusion_from_store`` (two passes; pass 2 from the blocks kept in memory);
* ours, re-read - the same with ``memory_budget=0`` (larger-than-memory mode: reads twice);
* reference  - load every row, then a straightforward per-class Python loop
               (float64 covariance PCA, mask per class, np.quantile, loop over pairs);
* GPU        - ``device="cuda"`` (CuPy kernels) when a GPU is usable.

Prints the times, the ratios to the floor and the largest difference from the reference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featstore.backend import cupy_usable  # noqa: E402
from featstore.confusion import confusion_from_store  # noqa: E402
from featstore.features import feature_view  # noqa: E402
from featstore.store import FeatureStore, ModalitySpec  # noqa: E402


def build_store(path: Path, n: int, d: int, c: int, chunk_rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    da = d // 2
    dv = d - da
    y = rng.integers(0, c, size=n).astype(np.int32)
    ca = rng.normal(size=(c, da)).astype(np.float32)
    cv = rng.normal(size=(c, dv)).astype(np.float32)
    store = FeatureStore.create(
        path,
        ids=[f"r{i}" for i in range(n)],
        modalities={"audio": ModalitySpec("bench", da), "video": ModalitySpec("bench", dv)},
        labels=y,
        chunk_rows=chunk_rows,
        dtype="float16",
        overwrite=True,
    )
    step = chunk_rows * 8
    for s in range(0, n, step):
        e = min(n, s + step)
        a = ca[y[s:e]] + rng.normal(size=(e - s, da)).astype(np.float32) * 1.5
        v = cv[y[s:e]] + rng.normal(size=(e - s, dv)).astype(np.float32) * 2.0
        store.write_rows(s, embeddings={"audio": a, "video": v})
    return y


def plain_read(store: FeatureStore) -> float:
    t = time.perf_counter()
    total = 0.0
    for shard in store.iter_shards(("audio", "video")):
        total += float(shard.data["audio"][0, 0]) + float(shard.data["video"][0, 0])
    return time.perf_counter() - t


def naive_reference(store: FeatureStore, labels: np.ndarray, k: int = 2, q: float = 0.95):
    rows, X = feature_view(store, "audio+video").load()
    t = time.perf_counter()
    y = labels[rows]
    X = X.astype(np.float64)
    Xc = X - X.mean(axis=0)
    evals, evecs = np.linalg.eigh(Xc.T @ Xc / len(X))
    Z = Xc @ evecs[:, ::-1][:, :k]
    classes = np.unique(y)
    cent, radii = [], []
    for c in classes:
        pts = Z[y == c]
        m = pts.mean(axis=0)
        cent.append(m)
        radii.append(np.quantile(np.linalg.norm(pts - m, axis=1), q))
    C = len(classes)
    M = np.zeros((C, C))
    for i in range(C):
        for j in range(C):
            if i != j:
                d = float(np.linalg.norm(cent[i] - cent[j]))
                M[i, j] = max(0.0, radii[i] + radii[j] - d) / d
    return M, time.perf_counter() - t


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=300)
    p.add_argument("--chunk-rows", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=2, help="best of this many runs per timing")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args()

    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        path = Path(tmp) / "bench.store"
        t = time.perf_counter()
        labels = build_store(path, a.rows, a.dim, a.classes, a.chunk_rows)
        store = FeatureStore.open(path)
        print(
            f"store: N={a.rows:,} D={a.dim} C={a.classes} float16, chunk_rows={a.chunk_rows} "
            f"({store.bytes_on_disk() / 2**20:.0f} MiB on disk, built in {time.perf_counter() - t:.1f}s)"
        )

        _, floor = timed(lambda: plain_read(store), a.repeat)
        res, ours = timed(lambda: confusion_from_store(store, labels), a.repeat)
        res2, reread = timed(lambda: confusion_from_store(store, labels, memory_budget=0), 1)
        print(f"floor (one plain read of audio+video) : {floor:7.2f} s")
        print(
            f"ours (confusion_from_store)           : {ours:7.2f} s   = {ours / floor:.2f}x floor"
        )
        print(
            f"ours, re-read mode (memory_budget=0)  : {reread:7.2f} s   = {reread / floor:.2f}x floor"
        )
        print(f"  agreement cached vs re-read: max |dM| = {np.nanmax(np.abs(res.M - res2.M)):.2e}")
        if not a.no_reference:
            (M_ref, ref_compute), ref_total = timed(lambda: naive_reference(store, labels), 1)
            rel = np.nanmax(np.abs(res.M - M_ref)) / max(np.nanmax(np.abs(M_ref)), 1e-300)
            print(
                f"reference (load + per-class loop)     : {ref_total:7.2f} s   = {ref_total / floor:.2f}x floor "
                f"(compute alone {ref_compute:.2f} s); ours is {ref_total / ours:.2f}x faster"
            )
            print(f"  agreement with reference: max |dM| / max|M| = {rel:.2e}")
        if cupy_usable():
            gres, gpu = timed(lambda: confusion_from_store(store, labels, device="cuda"), a.repeat)
            rel = np.nanmax(np.abs(gres.M - res.M)) / max(np.nanmax(np.abs(res.M)), 1e-300)
            print(
                f"ours on GPU (CuPy kernels)            : {gpu:7.2f} s   = {gpu / floor:.2f}x floor; "
                f"max rel diff vs CPU {rel:.2e}"
            )
        else:
            print("GPU path: skipped (no usable CuPy/CUDA device)")
        print(
            f"stats: mean {res.stats()['mean']:.4f}, var {res.stats()['var']:.4f}, pairs {res.stats()['n_pairs']:,}"
        )


if __name__ == "__main__":
    main()
