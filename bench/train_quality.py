"""Do `diccae train`'s defaults converge at every data size?  Trained heads vs a linear probe.

For each data set and size: a store is made, round-0 K-means pseudo-labels, then
the documented recipe (pretrain with re-clustering -> finetune -> eval on the test
split) with the defaults and with ``--preset paper``.  ``diccae eval``'s own
probe (logistic regression on the standardised input embeddings, fitted on the
run's training rows) is the baseline.  Goal, on every size: defaults >= probe - 1
point on audio-visual, each single head >= its probe - 2 points, defaults in
under 2 minutes per size on 2 cores.

Data sets (none of them tuned against):

* ``synthetic``: our generator, 10 classes, 256-d audio + 256-d video; classes
  come in pairs that sound alike (audio ambiguous) or look alike (video
  ambiguous), each class a mixture of sub-clusters seen through a random
  non-linear map; sizes ~300 / 1,500 / 15,000 clips;
* ``digits``: scikit-learn's 8x8 digits (1,797 images, 10 classes), the top four
  pixel rows as "audio" and the bottom four as "video";
* ``sklearn``: ``make_classification`` (another generator), 10 classes, its
  informative features split between the two "modalities".

    python bench/train_quality.py [--datasets synthetic,digits,sklearn] [--sizes 300,1500,15000]
        [--seeds 3] [--presets default,paper] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from featstore.labels import cluster_store
from featstore.store.core import FeatureStore, ModalitySpec
from trainer.config import preset_config
from trainer.evaluate import evaluate
from trainer.phases import finetune, pretrain

HEADS = (("audio", "audio"), ("video", "video"), ("av", "audio-visual"))


# ------------------------------------------------------------------- data sets
def synthetic(n: int, seed: int, *, classes: int = 10, dim: int = 256, sub: int = 3):
    """Class structure + per-modality ambiguity, through a random non-linear map."""
    rng = np.random.default_rng([seed, 17])
    latent = 16
    y = rng.integers(0, classes, n)
    out = []
    for m, (ambiguous_pairs, noise) in enumerate((([0, 2, 4, 8], 1.4), ([6, 8], 1.0))):
        centres = rng.normal(size=(classes, sub, latent)) * 1.6
        for c in ambiguous_pairs:  # class c+1 sounds (m=0) / looks (m=1) like class c, almost
            centres[c + 1] = centres[c] + 0.25 * rng.normal(size=(sub, latent))
        z = centres[y, rng.integers(0, sub, n)] + noise * rng.normal(size=(n, latent))
        w1 = rng.normal(size=(latent, 64)) / np.sqrt(latent)
        w2 = rng.normal(size=(64, dim)) / 8.0
        x = np.tanh(z @ w1) @ w2 + 0.05 * rng.normal(size=(n, dim))
        out.append(
            (x * (3.0 if m == 0 else 0.5)).astype(np.float32)
        )  # arbitrary per-modality scale
    return out[0], out[1], y


def digits(n: int, seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    return x[idx, :32], x[idx, 32:], y[idx]


def sklearn_gen(n: int, seed: int):
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n,
        n_features=64,
        n_informative=24,
        n_redundant=8,
        n_classes=10,
        n_clusters_per_class=2,
        class_sep=1.2,
        flip_y=0.02,
        random_state=seed,
    )
    x = x.astype(np.float32)[:, np.random.default_rng(seed).permutation(64)]
    return x[:, :32], x[:, 32:], y


DATASETS = {"synthetic": synthetic, "digits": digits, "sklearn": sklearn_gen}


def make_store(
    path: Path, audio: np.ndarray, video: np.ndarray, y: np.ndarray, seed: int
) -> FeatureStore:
    """70 % train, 10 % val, 20 % test (the issue's held-out set: 1,050 / 150 / 300)."""
    n = len(y)
    splits = np.random.default_rng([seed, 3]).choice(
        ["train", "val", "test"], size=n, p=[0.7, 0.1, 0.2]
    )
    store = FeatureStore.create(
        path,
        ids=[f"c{i:06d}" for i in range(n)],
        labels=y.astype(np.int64),
        splits=list(splits),
        class_names=[f"class{c}" for c in range(int(y.max()) + 1)],
        modalities={
            "audio": ModalitySpec("bench", audio.shape[1]),
            "video": ModalitySpec("bench", video.shape[1]),
        },
        chunk_rows=1024,
        dtype="float32",
        source="bench",
    )
    for s, e in store.shard_ranges():
        store.write_rows(s, embeddings={"audio": audio[s:e], "video": video[s:e]})
    return store


# ----------------------------------------------------------------------- runs
def one_run(root: Path, store_path: Path, preset: str, seed: int, k: int, threads: int) -> dict:
    labels0 = root / "round0.npy"
    if not labels0.is_file():
        cluster_store(store_path, out=labels0, k=k, n_init=10, seed=seed, plot=False)
    cfg = preset_config(preset).with_overrides(
        seed=seed, progress=False, plots=False, threads=threads
    )
    t0, c0 = time.perf_counter(), time.process_time()
    pre = pretrain(store_path, labels_path=labels0, out_dir=root / preset / "pre", config=cfg)
    fine = finetune(
        store_path,
        init_checkpoint=root / preset / "pre",
        out_dir=root / preset / "fine",
        config=cfg,
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    r = evaluate(
        root / preset / "fine",
        store_path,
        split="test",
        device="cpu",
        plot=False,
        compare_inputs=False,
    )
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "pre_epochs": pre.epochs,
        "fine_epochs": fine.epochs,
        "stop": fine.stop,
        "checkpoint": r["checkpoint"]["which"],
        "n_test": r["n_rows"],
        **{f"top1_{h}": r[f"top1_{h}"] for h, _ in HEADS},
        **{f"probe_{h}": r[f"probe_{h}"] for h, _ in HEADS},
    }


def _ms(values: list[float]) -> str:
    v = 100 * np.asarray(values, float)
    return f"{v.mean():5.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:4.1f}"


def report(results: dict) -> str:
    lines = []
    for ds, by_size in results.items():
        for h, title in HEADS:
            lines += [
                f"\n{ds}: {title} head, test top-1 % (mean ± sd over seeds)",
                "",
                "| clips | probe | defaults | paper preset | defaults − probe | goal |",
                "|---:|---:|---:|---:|---:|---|",
            ]
            for size, runs in by_size.items():
                d, p = runs.get("default", []), runs.get("paper", [])
                probe = [r[f"probe_{h}"] for r in d or p]
                gap = [r[f"top1_{h}"] - r[f"probe_{h}"] for r in d]
                tol = 0.01 if h == "av" else 0.02
                ok = "" if not gap else ("met" if np.mean(gap) >= -tol else "MISSED")
                lines.append(
                    f"| {size} | {_ms(probe)} | {_ms([r[f'top1_{h}'] for r in d]) if d else '–'} | "
                    f"{_ms([r[f'top1_{h}'] for r in p]) if p else '–'} | "
                    f"{(f'{100 * np.mean(gap):+.1f}') if gap else '–'} | {ok} (≥ −{100 * tol:.0f}) |"
                )
        lines += [
            "",
            f"{ds}: seconds to train (pretrain + finetune), epochs, why finetune stopped",
            "",
            "| clips | preset | wall s | CPU s | pretrain epochs | finetune epochs | stop | scored |",
            "|---:|---|---:|---:|---:|---:|---|---|",
        ]
        for size, runs in by_size.items():
            for preset, rs in runs.items():
                secs = [r["seconds"] for r in rs]
                stops = sorted(
                    {f"{r['stop']['stop_reason']}@{r['stop']['stopped_epoch']}" for r in rs}
                )
                cpu = [r["cpu_seconds"] for r in rs]
                lines.append(
                    f"| {size} | {preset} | {np.mean(secs):.0f} (max {max(secs):.0f}) | {np.mean(cpu):.0f} | "
                    f"{'/'.join(str(r['pre_epochs']) for r in rs)} | {'/'.join(str(r['fine_epochs']) for r in rs)} | "
                    f"{', '.join(stops)} | {'/'.join(r['checkpoint'] for r in rs)} |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", default="synthetic,digits,sklearn")
    ap.add_argument(
        "--sizes",
        default="300,1500,15000",
        help="clips per synthetic/sklearn set (digits: at most 1797)",
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--presets", default="default,paper")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {}
    for ds in args.datasets.split(","):
        sizes = [int(s) for s in args.sizes.split(",")]
        if ds == "digits":
            sizes = sorted({min(s, 1797) for s in sizes})
        for size in sizes:
            for seed in range(args.seeds):
                audio, video, y = DATASETS[ds](size, seed)
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp)
                    make_store(root / "store.zarr", audio, video, y, seed)
                    k = 3 * len(np.unique(y))
                    for preset in args.presets.split(","):
                        r = one_run(root, root / "store.zarr", preset, seed, k, args.threads)
                        results.setdefault(ds, {}).setdefault(size, {}).setdefault(
                            preset, []
                        ).append(r)
                        print(
                            f"{ds} n={size} seed={seed} {preset}: A {100 * r['top1_audio']:.1f} "
                            f"(probe {100 * r['probe_audio']:.1f})  V {100 * r['top1_video']:.1f} "
                            f"(probe {100 * r['probe_video']:.1f})  AV {100 * r['top1_av']:.1f} "
                            f"(probe {100 * r['probe_av']:.1f})  {r['seconds']:.0f} s, {r['stop']}",
                            flush=True,
                        )
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
