"""`diccae store verify` throughput vs one plain read of the same store (same run).

The plain read is the cheapest full pass a job could make: every array of the store
read once through Zarr, chunk by chunk, with no checks.  Verify reads every chunk
file, CRCs it, decodes it, and checks the seal and the fingerprint; the ratio says
what it costs to run it before a long job.  Both passes are timed ``--repeats``
times in alternation (page cache warm after the first write) and the median kept.

    python bench/verify.py [--rows 65536] [--dim 512] [--chunk-rows 1024] [--compression zstd]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from featstore.store.core import FeatureStore, ModalitySpec
from featstore.store.integrity import verify_store


def make_store(path: Path, rows: int, dim: int, chunk: int, compression: str) -> FeatureStore:
    rng = np.random.default_rng(0)
    store = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(rows)],
        labels=rng.integers(0, 10, rows),
        chunk_rows=chunk,
        dtype="float16",
        compression=compression,
        modalities={"audio": ModalitySpec("a", dim), "video": ModalitySpec("v", dim)},
    )
    for s, e in store.shard_ranges():
        store.write_rows(
            s,
            embeddings={
                "audio": rng.standard_normal((e - s, dim)),
                "video": rng.standard_normal((e - s, dim)),
            },
            missing={"audio": np.zeros(e - s, bool), "video": np.zeros(e - s, bool)},
        )
    return FeatureStore.open(path)


def plain_read(store: FeatureStore) -> int:
    nbytes = 0
    for name in store.array_names():
        arr = store.array(name)
        for s, e in store.shard_ranges():
            nbytes += np.asarray(arr[s:e]).nbytes
    return nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--compression", default="zstd", choices=("zstd", "none"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(
            Path(tmp) / "s.zarr", args.rows, args.dim, args.chunk_rows, args.compression
        )
        disk = store.bytes_on_disk()
        plain, ver = [], []
        report = {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            plain_read(store)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = verify_store(FeatureStore.open(store.path))
            ver.append(time.perf_counter() - t0)
        assert report["ok"], report["problems"]
        p, v = statistics.median(plain), statistics.median(ver)
        print(
            f"store: {args.rows} rows x 2 x {args.dim} float16 ({args.compression}), "
            f"{disk / 1e6:.1f} MB on disk, {args.chunk_rows} rows per chunk"
        )
        print(
            f"plain read : {p:.3f} s  {disk / 1e6 / p:8.1f} MB/s (on-disk bytes)  runs {[round(x, 3) for x in plain]}"
        )
        print(
            f"verify     : {v:.3f} s  {disk / 1e6 / v:8.1f} MB/s (on-disk bytes)  runs {[round(x, 3) for x in ver]}"
        )
        print(f"verify / plain read time: {v / p:.2f}x")


if __name__ == "__main__":
    main()
