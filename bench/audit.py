"""Benchmark: ``diccae audit`` time against one plain read of the store, and its flags' quality.

    python bench/audit.py                                   # N=200k, D=512 (256+256), C=300
    python bench/audit.py --rows 50000,100000,200000 --threads 1   # how it scales with rows
    python bench/audit.py --rows 100000 --classes 30,100,300       # ... and with classes
    python bench/audit.py --quality-only                    # only the precision/recall table
    python bench/audit.py --quality-only --no-quality --demo 320   # only the demo designed-pairs check

Measured in the same run, on the same store (bench/confusion.py's generator, float16, zstd),
for every (rows, classes) size asked for; floor and audit alternate, best of ``--repeat``:

* floor   - one plain read of the audio and video arrays, chunk by chunk (bench/confusion.py);
* gemm    - the audit's irreducible float32 arithmetic on data of the same shape, in memory,
            on one BLAS thread: per view one ``X'X`` and one ``X @ [centroids | probe]``
            (rows x D x 2C);
* confusion - ``confusion_from_store`` alone (the class-level stage), for scale (``--confusion``);
* audit   - ``run_audit`` with the default views (audio, video, audio+video), one worker
            thread per core (``--threads`` limits both);
* ratios to the floor in wall time and in CPU time (process time, all threads): on a shared,
  oversubscribed machine the CPU ratio is the steadier one.  Writing the four files is timed
  once at the largest size.

The audit does O(rows x D x classes) multiply-adds and the read O(rows x D) bytes, so the
ratio grows with the number of classes and stays flat in rows (fixed costs aside: the
(K+1) D x D eigendecompositions per view).

Quality (``--quality``, on by default): ``likely_mislabeled`` precision and recall with 5 % of
labels flipped at known rows, on (a) the bench store, (b) sklearn's digits with the top and
bottom image halves as two modalities, (c) sklearn's wine with its features split in two;
next to the simplest baseline measured in the same run: flag every row whose cross-validated
logistic-regression prediction (scikit-learn, all features) differs from its label.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confusion import build_store, plain_read  # noqa: E402  (bench/confusion.py: same store)

from featstore.analysis import AuditConfig, run_audit, write_audit  # noqa: E402
from featstore.confusion import confusion_from_store  # noqa: E402
from featstore.store.core import FeatureStore, ModalitySpec  # noqa: E402


def flip(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    C = int(labels.max()) + 1
    rows = np.sort(rng.choice(labels.size, int(round(frac * labels.size)), replace=False))
    out = labels.astype(np.int64).copy()
    out[rows] = (out[rows] + rng.integers(1, C, rows.size)) % C
    return out, rows


def pr(flag: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    found = np.flatnonzero(flag)
    hits = np.intersect1d(found, truth).size
    return (hits / found.size if found.size else 0.0), hits / max(truth.size, 1)


def logreg_baseline(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return cross_val_predict(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)), X, y, cv=5
    )


def quality_row(
    name: str, store: FeatureStore, X: np.ndarray | None, labels: np.ndarray, seed: int
) -> None:
    noisy, flipped = flip(labels, 0.05, seed)
    t = time.perf_counter()
    res = run_audit(store, noisy, config=AuditConfig(seed=seed))
    took = time.perf_counter() - t
    p, r = pr(res.flag("likely_mislabeled"), flipped)
    acc = res.metrics["views"]["audio+video"]["probe_cv_accuracy"]
    line = (
        f"{name:<28} {len(labels):>8,} {p:6.3f} {r:6.3f}   fused probe acc {acc:.3f}  ({took:.1f}s)"
    )
    if X is not None:
        bp, br = pr(logreg_baseline(X, noisy) != noisy, flipped)
        line += f" | baseline logreg P {bp:.3f} R {br:.3f}"
    print(line)


def quality(tmp: Path, bench_store: FeatureStore | None, bench_labels: np.ndarray | None) -> None:
    from sklearn.datasets import load_digits, load_wine

    print("\nlikely_mislabeled with 5 % of labels flipped at known rows")
    print(f"{'data':<28} {'rows':>8} {'P':>6} {'R':>6}")
    if bench_store is not None and bench_labels is not None:
        quality_row("bench store (synthetic)", bench_store, None, bench_labels, 0)
    for name, (X, y), split in (
        ("digits (top/bottom halves)", load_digits(return_X_y=True), 32),
        ("wine (features 0-6 / 7-12)", load_wine(return_X_y=True), 7),
    ):
        X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-12)
        for seed in (0, 1, 2):
            path = tmp / f"{name.split()[0]}{seed}.zarr"
            store = FeatureStore.create(
                path,
                ids=[f"r{i}" for i in range(len(y))],
                labels=y,
                chunk_rows=256,
                dtype="float32",
                modalities={
                    "audio": ModalitySpec("half", split),
                    "video": ModalitySpec("half", X.shape[1] - split),
                },
            )
            store.write_rows(0, embeddings={"audio": X[:, :split], "video": X[:, split:]})
            quality_row(f"{name} seed {seed}", store, X, y, seed)


def demo_check(tmp: Path, n_clips: int) -> None:
    """The demo data set (real MP4s, decoded and embedded): do the modality disagreements
    fall on the designed look-alike / sound-alike class pairs?"""
    from demo.data import load_demo_design, make_demo_dataset
    from featstore.analysis import audit_store, audit_summary_markdown
    from featstore.extract.pipeline import ExtractConfig, extract

    manifest = make_demo_dataset(
        tmp / "demo", n_clips=n_clips, n_classes=8, seed=0, duration=1.0, size=32, fps=16.0
    )
    design = load_demo_design(tmp / "demo")
    cfg = ExtractConfig(
        audio_encoder="kaldi-fbank",
        video_encoder="frame-stats",
        device="cpu",
        workers=1,
        overwrite=True,
        chunk_rows=128,
    )
    extract(manifest, tmp / "demo.zarr", cfg)
    doc = audit_store(tmp / "demo.zarr", ground_truth=True, out_dir=tmp / "demo_audit")
    names = design.class_names
    pairs = [(names[i], names[j]) for i, j in design.look_alike + design.sound_alike]
    print(f"\ndemo data set: {n_clips} clips, 8 classes, designed pairs {pairs}")
    print(audit_summary_markdown(doc, designed_pairs=pairs, heading="### audit of the demo store"))


def cpu_wall(fn: Any) -> tuple[float, float, Any]:
    t, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - t, time.perf_counter() - w, out


def gemm_floor(n: int, dims: list[int], c: int) -> float:
    """CPU seconds of the audit's unavoidable float32 products on random data of its shape,
    on one BLAS thread: a multithreaded BLAS adds its threads' spin-waits to the CPU time,
    and on a shared machine those vary from run to run."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(1)
    total = 0.0
    with threadpool_limits(limits=1, user_api="blas"):
        for d in dims:
            x = rng.normal(size=(min(n, 32768), d + 1)).astype(np.float32)
            w = rng.normal(size=(d + 1, 2 * c)).astype(np.float32)
            t = time.process_time()
            _g = x[:, :d].T @ x[:, :d]
            _z = x @ w
            total += (time.process_time() - t) * n / x.shape[0]
    return total


def speed(tmp: Path, a: argparse.Namespace, rows: int, classes: int) -> tuple:
    path = tmp / f"bench_{rows}_{classes}.store"
    t = time.perf_counter()
    labels = build_store(path, rows, a.dim, classes, a.chunk_rows)
    store = FeatureStore.open(path)
    built = time.perf_counter() - t
    floors, audits, confs = [], [], []
    res = None
    for _ in range(a.repeat):  # floor and audit alternate: both see the same load
        floors.append(cpu_wall(lambda: plain_read(store))[:2])
        if a.confusion:
            confs.append(cpu_wall(lambda: confusion_from_store(store, labels))[:2])
        cpu, wall, res = cpu_wall(lambda: run_audit(store, labels))
        audits.append((cpu, wall))
    fc, fw = min(f[0] for f in floors), min(f[1] for f in floors)
    ac, aw = min(x[0] for x in audits), min(x[1] for x in audits)
    da = a.dim // 2
    gemm = gemm_floor(rows, [da, a.dim - da, a.dim], classes)
    assert res is not None
    acc = res.metrics["views"]["audio+video"]["probe_cv_accuracy"]
    line = (
        f"{rows:>9,} {classes:>5} {fw:7.2f} {aw:8.2f} {aw / fw:7.1f}x {fc:7.2f} {ac:8.2f} "
        f"{ac / fc:7.1f}x {gemm:7.2f} {ac / gemm:6.2f}x {1e6 * ac / rows:9.1f}  "
        f"{res.metrics['seconds']}  fused acc {acc}"
    )
    if confs:
        cc, cw = min(x[0] for x in confs), min(x[1] for x in confs)
        line += f"  confusion alone {cw:.2f}s wall = {cw / fw:.1f}x, {cc / fc:.1f}x cpu"
    print(line + f"  (store {store.bytes_on_disk() / 2**20:.0f} MiB, built in {built:.0f}s)")
    return store, labels, res


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", default="200000", help="rows, or a comma-separated list")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", default="300", help="classes, or a comma-separated list")
    p.add_argument("--chunk-rows", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=2, help="best of this many (floor, audit) pairs")
    p.add_argument("--confusion", action="store_true", help="also time confusion_from_store")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS threads (threadpoolctl); on a shared, oversubscribed machine 1 is far faster",
    )
    p.add_argument("--quality-only", action="store_true")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument(
        "--demo",
        type=int,
        default=0,
        metavar="N",
        help="also generate N demo clips, extract and audit them (the designed-pairs check)",
    )
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args()
    if a.threads:
        # load every BLAS first: threadpoolctl limits only the libraries already loaded
        import scipy.linalg  # noqa: F401
        import sklearn.linear_model  # noqa: F401
        import torch
        from threadpoolctl import threadpool_limits

        a.limits = threadpool_limits(a.threads)
        torch.set_num_threads(a.threads)

    if a.workdir:
        Path(a.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        tmp = Path(tmp)
        store = labels = res = None
        if not a.quality_only:
            print(
                f"D={a.dim} (audio {a.dim // 2} + video {a.dim - a.dim // 2}), float16 zstd, "
                f"chunk_rows={a.chunk_rows}, BLAS threads {a.threads or 'default'}, best of {a.repeat}"
            )
            print(
                f"{'rows':>9} {'C':>5} {'floor':>7} {'audit':>8} {'ratio':>8} {'floor':>7} "
                f"{'audit':>8} {'ratio':>8} {'gemm':>7} {'/gemm':>7} {'us/row':>9}"
            )
            print(f"{'':>15} {'wall s':>16} {'':>8} {'CPU s':>16}")
            sizes = [(int(r), int(c)) for c in a.classes.split(",") for r in a.rows.split(",")]
            for rows, classes in sizes:
                store, labels, res = speed(tmp, a, rows, classes)
            assert res is not None and store is not None
            t = time.perf_counter()
            write_audit(res, store, tmp / "out")
            print(
                f"writing the four files at {store.n_rows:,} rows: {time.perf_counter() - t:.2f}s"
            )
            print(f"flags: {res.counts()}")
        if not a.no_quality:
            quality(tmp, store, labels)
        if a.demo:
            demo_check(tmp, a.demo)


if __name__ == "__main__":
    main()
