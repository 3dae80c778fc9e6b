"""K-means benchmark: our CPU path vs faiss-cpu vs scikit-learn, restarts, streaming.

Everything runs on the same data in one process, so ratios are comparable even on a
noisy shared machine.  Reports, for ``--iters`` Lloyd iterations (tol=0):

* time and inertia of ``featstore.kmeans.estimator.KMeans`` (default CPU backend), faiss's own
  ``Kmeans`` with subsampling off (``max_points_per_centroid`` = N) plus the final
  label search a user needs, and scikit-learn (``algorithm="lloyd"``), all from the
  same initial centres;
* the floor, measured the way the fastest kernel (scikit-learn's Lloyd loop) works:
  its assignment step alone (256-row chunks, a single-threaded sgemm into a buffer
  that stays in cache, argmin; all cores), ``--iters`` times.  The old floor (one big
  multi-threaded numpy sgemm per 65,536 rows) is printed too: it streams its N x K
  result through memory and was slower than scikit-learn's whole loop;
* ``--restarts`` restarts: ours with ``restart_sample`` vs faiss ``nredo`` on all rows;
* streaming from a store larger than ``--memory-budget`` vs in memory, with one plain
  zarr read of the same store and one pass of the reader (bench/read.py) beside it.

Usage: python bench/kmeans.py [--n 200000 --d 512 --k 300 --iters 10 --restarts 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from read import build_store, make_data, plain_read, reader_pass


def sgemm_rate(d: int, k: int, reps: int = 3) -> float:
    """FLOP/s of the (rows x d) @ (d x k) product the assignment step needs."""
    rows = 65536
    a = np.random.rand(rows, d).astype(np.float32)
    b = np.random.rand(d, k).astype(np.float32)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * rows * d * k / best


def estep_floor_seconds(x: np.ndarray, centers: np.ndarray, iters: int) -> float:
    """Seconds for ``iters`` assignment steps of the fastest kernel, scikit-learn's chunked Lloyd loop.

    ``lloyd_iter_chunked_dense(update_centers=False)`` is exactly the distance sgemm
    (256-row chunks, one BLAS thread each, result in cache) plus argmin, on all cores,
    without the centre update: a Lloyd iteration cannot cost less.  Timing numpy's
    own sgemm instead (the old floor) measured a different BLAS build and memory-bound
    65,536-row products, and came out slower than scikit-learn's whole loop.
    """
    from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    from threadpoolctl import threadpool_limits

    n, k = x.shape[0], centers.shape[0]
    c = np.ascontiguousarray(centers, np.float32)
    labels = np.empty(n, np.int32)
    args = (
        np.ones(n, np.float32),
        c,
        c,
        np.zeros(k, np.float32),
        labels,
        np.zeros(k, np.float32),
        _openmp_effective_n_threads(),
    )
    with threadpool_limits(1, "blas"):
        lloyd_iter_chunked_dense(x, *args, update_centers=False)  # warm-up
        t = time.perf_counter()
        for _ in range(iters):
            lloyd_iter_chunked_dense(x, *args, update_centers=False)
        return time.perf_counter() - t


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def faiss_run(x, init, iters, nredo=1, seed=0, k=None):
    import faiss

    n, d = x.shape
    k = init.shape[0] if init is not None else k
    km = faiss.Kmeans(
        d,
        k,
        niter=iters,
        nredo=nredo,
        seed=seed,
        max_points_per_centroid=n + 1,
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(x, init_centroids=init)
    dist, lab = km.index.search(x, 1)  # the labels a user needs after training
    return float(dist.sum(dtype=np.float64)), lab[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=300)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--memory-budget", default=None, help="default: half the data size")
    ap.add_argument("--stream-repeat", type=int, default=3, help="best of N for the streaming rows")
    ap.add_argument("--skip", default="", help="comma list of: single,sklearn,restarts,stream")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from featstore.kmeans import KMeans, kmeans_plusplus, resolve_backend

    resolve_backend("auto", "auto")  # pay the one-off torch import (GPU probe) before timing

    n, d, k, iters = args.n, args.d, args.k, args.iters
    x = make_data(n, d, k)
    print(f"data: {n} x {d} float32 ({x.nbytes / 1e6:.0f} MB), K={k}, {iters} iterations, tol=0")
    rate = sgemm_rate(d, k)
    floor = iters * 2 * n * k * d / rate
    init = kmeans_plusplus(x[:20000], k, np.random.RandomState(0))
    rows = []
    # warm-up: every method pays its one-off imports and allocations before timing
    from sklearn.cluster import KMeans as SK

    KMeans(k, init=init, max_iter=1, tol=0).fit(x[:20000])
    KMeans(k, init=init, max_iter=1, tol=0, backend="numpy").fit(x[:20000])
    faiss_run(x[:20000], init, 1)
    SK(k, init=init, n_init=1, max_iter=1, tol=0, algorithm="lloyd").fit(x[:20000])
    R = 2  # repeats of each single-run timing

    # the single runs take turns (round-robin, best of R each), so a neighbour's burst of
    # load cannot fall on one method only
    methods = {
        "ours": lambda: KMeans(k, init=init, max_iter=iters, tol=0).fit(x),
        "faiss": lambda: faiss_run(x, init, iters),
        "numpy": lambda: KMeans(k, init=init, max_iter=iters, tol=0, backend="numpy").fit(x),
    }
    if "single" in skip:
        methods = {}  # only restarts and/or streaming
    elif "sklearn" not in skip:
        methods["sklearn"] = lambda: SK(
            k, init=init, n_init=1, max_iter=iters, tol=0, algorithm="lloyd"
        ).fit(x)
    best = {}
    for _ in range(R):
        for name, fn in methods.items():
            run = timed(fn)
            if name not in best or run[0] < best[name][0]:
                best[name] = run
    if "single" not in skip:
        t_ours, km = best["ours"]
        rows.append((f"ours ({km.backend_}, {km.n_iter_} iterations)", t_ours, km.inertia_))
        t_faiss, (in_faiss, _) = best["faiss"]
        rows.append(("faiss Kmeans (no subsampling) + label search", t_faiss, in_faiss))
        t_np, kn = best["numpy"]
        rows.append(("ours (numpy sgemm kernel)", t_np, kn.inertia_))
        if "sklearn" not in skip:
            t_sk, sk = best["sklearn"]
            rows.append(
                (f"scikit-learn (lloyd, {sk.n_iter_} iterations)", t_sk, float(sk.inertia_))
            )
        # as many assignment steps as the Lloyd runs made (they stop early once labels stop changing)
        f_it = int(km.n_iter_)
        t_floor = min(estep_floor_seconds(x, init, f_it) for _ in range(R))
        rows.append(
            (
                f"floor: {f_it} sklearn assignment steps ({2 * n * k * d * f_it / t_floor / 1e9:.0f} GFLOP/s)",
                t_floor,
                float("nan"),
            )
        )
        rows.append((f"old floor: 65536-row sgemm ({rate / 1e9:.0f} GFLOP/s)", floor, float("nan")))
        t_ref = t_sk if "sklearn" not in skip else float("nan")
        print(
            f"\n{'method':48s} {'seconds':>9s} {'x faiss':>8s} {'x sklearn':>9s} {'inertia':>14s} {'vs faiss':>9s}"
        )
        for name, t, inertia in rows:
            rel = "" if np.isnan(inertia) else f"{100 * (inertia / in_faiss - 1):+.3f}%"
            print(
                f"{name:48s} {t:9.2f} {t / t_faiss:8.2f} {t / t_ref:9.2f} {inertia:14.6g} {rel:>9s}"
            )

    if "restarts" not in skip:
        R = args.restarts
        t_fr, (in_fr, _) = timed(lambda: faiss_run(x, None, iters, nredo=R, seed=1, k=k))
        t_or, ko = timed(lambda: KMeans(k, n_init=R, max_iter=iters, tol=0, random_state=1).fit(x))
        print(f"\n{R} restarts x {iters} iterations")
        print(
            f"{'faiss nredo=' + str(R) + ' on all rows':48s} {t_fr:9.2f} {1.0:8.2f} {in_fr:14.6g}"
        )
        print(
            f"{'ours, restart_sample=' + str(ko.restart_sample_) + ' rows + refine':48s} {t_or:9.2f} "
            f"{t_or / t_fr:8.2f} {ko.inertia_:14.6g} {100 * (ko.inertia_ / in_fr - 1):+.3f}%"
        )

    if "stream" not in skip:
        import os

        print(
            f"\nstreaming: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared machine)"
        )
        for compression in ("zstd", "none"):
            with tempfile.TemporaryDirectory() as tmp:
                s = build_store(Path(tmp) / "s", x, compression)
                budget = args.memory_budget or str(x.nbytes // 2)
                p = dict(init=init, max_iter=iters, tol=0)
                rpb = s.chunk_rows * 2
                fns = {
                    "in memory": lambda s=s, p=p: KMeans(k, **p).fit(s),
                    "streamed": lambda s=s, p=p, b=budget: KMeans(k, memory_budget=b, **p).fit(s),
                    "plain read": plain_read(s, rpb),
                    "reader": reader_pass(s, rpb),
                }
                for name in ("plain read", "reader"):
                    fns[name]()  # warm-up (page cache, integrity scan)
                out: dict = {}
                for _ in range(args.stream_repeat):  # round-robin, best of N (wall)
                    for name, fn in fns.items():
                        c0 = time.process_time()
                        w, res = timed(fn)
                        run = (w, time.process_time() - c0, res)
                        if name not in out or run[0] < out[name][0]:
                            out[name] = run
                t_mem, c_mem, km_mem = out["in memory"]
                t_st, c_st, km_st = out["streamed"]
                assert km_st.streamed_ and not km_mem.streamed_
                print(
                    f"store ({s.bytes_on_disk() / 1e6:.0f} MB on disk, float16, compression={compression}), "
                    f"budget {budget} bytes; best of {args.stream_repeat}, load average now "
                    f"{os.getloadavg()[0]:.1f}"
                )
                print(
                    f"{'':48s} {'wall s':>9s} {'x mem':>8s} {'cpu s':>8s} {'x mem':>6s} {'inertia':>14s}"
                )
                for name, label in (
                    ("in memory", "in memory (load + cluster)"),
                    ("streamed", "streamed every iteration"),
                    ("plain read", "one plain zarr read of audio+video"),
                    ("reader", f"one reader pass (audio+video, {rpb} rows/block)"),
                ):
                    w, c, res = out[name]
                    inertia = f"{res.inertia_:14.6g}" if hasattr(res, "inertia_") else ""
                    print(
                        f"{label:48s} {w:9.2f} {w / t_mem:8.2f} {c:8.2f} {c / c_mem:6.2f} {inertia}"
                    )
                print(f"streamed run: {km_st.choice_['kernel']}")
                print(
                    f"streamed / in memory = {t_st / t_mem:.2f} (goal <= 1.3); reader / plain read = "
                    f"{out['reader'][0] / out['plain read'][0]:.2f}; streamed inertia "
                    f"{100 * (km_st.inertia_ / km_mem.inertia_ - 1):+.4f}% vs in memory"
                )


if __name__ == "__main__":
    main()
