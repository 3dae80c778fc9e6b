"""Benchmark: ``diccae audit`` time against one plain read of the store, and its flags' quality.

    python bench/audit.py                               # N=200k, D=512 (256+256), C=300
    python bench/audit.py --rows 2000000 --dim 256 --classes 300 --repeat 1
    python bench/audit.py --quality-only                # only the precision/recall table
    python bench/audit.py --quality-only --no-quality --demo 320   # only the demo designed-pairs check

Measured in the same run, on the same store (bench/confusion.py's generator, float16):

* floor  - one plain read of the audio and video arrays, chunk by chunk (bench/confusion.py);
* confusion - ``confusion_from_store`` alone (the existing class-level stage), for scale;
* audit  - ``run_audit`` with the default views (audio, video, audio+video): two streamed
           passes + the confusion degree's circles; and the same plus writing the four files;
* the time ÷ floor ratios, and the audit's own split (passes / circles / files).

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
    if bench_store is not None:
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


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=300)
    p.add_argument("--chunk-rows", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=2, help="best of this many (floor, audit) pairs")
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
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
        import torch

        torch.set_num_threads(a.threads)

    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        tmp = Path(tmp)
        store = labels = None
        if not a.quality_only:
            t = time.perf_counter()
            labels = build_store(tmp / "bench.store", a.rows, a.dim, a.classes, a.chunk_rows)
            store = FeatureStore.open(tmp / "bench.store")
            print(
                f"store: N={a.rows:,} D={a.dim} C={a.classes} float16 zstd, chunk_rows={a.chunk_rows}, "
                f"BLAS threads {a.threads or 'default'} "
                f"({store.bytes_on_disk() / 2**20:.0f} MiB, built in {time.perf_counter() - t:.1f}s)"
            )
            # floor and audit alternate, so both see the same load on a shared machine
            floors, audits, confs = [], [], []
            for _ in range(a.repeat):
                floors.append(plain_read(store))
                t = time.perf_counter()
                confusion_from_store(store, labels)
                confs.append(time.perf_counter() - t)
                t = time.perf_counter()
                res = run_audit(store, labels)
                audits.append(time.perf_counter() - t)
            floor, audit, conf = min(floors), min(audits), min(confs)
            t = time.perf_counter()
            write_audit(res, store, tmp / "out")
            files = time.perf_counter() - t
            s = res.metrics["seconds"]
            print(f"floor (one plain read of audio+video): {floor:8.2f} s")
            print(
                f"confusion degree alone (the existing stage): {conf:8.2f} s = {conf / floor:6.2f}x floor"
            )
            print(
                f"audit (run_audit, 3 views)           : {audit:8.2f} s = {audit / floor:6.2f}x floor "
                f"(passes {s['passes']:.1f}s, circles {s['ambiguity']:.1f}s)"
            )
            print(
                f"audit + writing the four files       : {audit + files:8.2f} s = {(audit + files) / floor:6.2f}x floor "
                f"(files {files:.1f}s)"
            )
            print(
                f"  per repeat (floor, audit): {[(round(f, 2), round(x, 1)) for f, x in zip(floors, audits, strict=True)]}"
            )
            print(f"flags: {res.counts()}")
        if not a.no_quality:
            quality(tmp, store, labels)
        if a.demo:
            demo_check(tmp, a.demo)


if __name__ == "__main__":
    main()
