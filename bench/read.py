"""Reader benchmark: one pass of ``FeatureView.iter_blocks`` against one plain zarr read.

The plain read is ``np.asarray(zarr_array[s:e])`` for audio and video over the same
chunk-aligned blocks, one after the other: decompression (zstd) or a copy (none)
into a float16 array, nothing else.  The reader also casts to float32, L2-normalises
each modality, concatenates, checks finiteness and applies the valid-row mask, so
``reader / plain`` is the reader's own overhead.  Every timing is the best of
``--repeat`` passes taken in turns (round-robin), so a neighbour's burst of load on a
shared machine cannot fall on one method only; CPU seconds (all threads of the
process) are printed next to wall seconds.

Usage: python bench/read.py [--n 200000 --d 512 --rows-per-block 6250,65536]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def make_data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """Gaussian mixture with 2k components, L2-normalised rows (like audio+video features)."""
    rs = np.random.RandomState(seed)
    centers = rs.randn(2 * k, d).astype(np.float32)
    x = centers[rs.randint(0, 2 * k, n)] + 0.8 * rs.randn(n, d).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build_store(path: Path, x: np.ndarray, compression: str, chunk_rows: int | None = None):
    """A float16 store with audio = the first half of x's columns, video = the rest."""
    from featstore.store.core import FeatureStore, ModalitySpec

    n, d = x.shape
    half = d // 2
    s = FeatureStore.create(
        path,
        ids=[str(i) for i in range(n)],
        chunk_rows=chunk_rows or max(256, min(4096, n // 64)),
        compression=compression,
        dtype="float16",
        modalities={"audio": ModalitySpec("a", half), "video": ModalitySpec("v", d - half)},
    )
    for a in range(0, n, 65536):
        s.write_rows(
            a, embeddings={"audio": x[a : a + 65536, :half], "video": x[a : a + 65536, half:]}
        )
    return s


def block_ranges(store, rows_per_block: int) -> list[tuple[int, int]]:
    """The chunk-aligned blocks FeatureView.iter_blocks reads for ``rows_per_block``."""
    ranges = store.shard_ranges()
    step = max(1, rows_per_block // store.chunk_rows)
    return [
        (ranges[i][0], ranges[min(i + step, len(ranges)) - 1][1])
        for i in range(0, len(ranges), step)
    ]


def plain_read(store, rows_per_block: int) -> Callable[[], int]:
    """One plain zarr read of audio and video, block by block (the floor a reader can reach)."""
    arrays = [store.array("audio"), store.array("video")]
    ranges = block_ranges(store, rows_per_block)

    def run() -> int:
        n = 0
        for s, e in ranges:
            for a in arrays:
                n += np.asarray(a[s:e]).shape[0]
        return n

    return run


def reader_pass(store, rows_per_block: int, features: str = "audio+video") -> Callable[[], int]:
    """One pass of the reader, as every streamed stage does it."""
    from featstore.store.features import FeatureView

    view = FeatureView(store, features)

    def run() -> int:
        return sum(x.shape[0] for _rows, x in view.iter_blocks(rows_per_block))

    return run


def best_of(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """Best (wall, cpu) seconds of each function, the functions taking turns."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            run = (time.perf_counter() - w, time.process_time() - c)
            if name not in best or run[0] < best[name][0]:
                best[name] = run
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--rows-per-block", default="6250,65536", help="comma list")
    ap.add_argument("--compression", default="zstd,none", help="comma list")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import os

    x = make_data(args.n, args.d, 300)
    print(
        f"data: {args.n} x {args.d} as float16 on disk; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'store':6s} {'rows/block':>10s} {'method':22s} {'wall s':>8s} {'cpu s':>8s} {'x plain':>8s}"
    )
    for compression in args.compression.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            store = build_store(Path(tmp) / "s", x, compression)
            for rpb in (int(r) for r in args.rows_per_block.split(",")):
                fns = {
                    "plain zarr read": plain_read(store, rpb),
                    "reader (audio+video)": reader_pass(store, rpb),
                }
                for fn in fns.values():
                    fn()  # warm-up: imports, page cache, integrity scan
                best = best_of(fns, args.repeat)
                ref = best["plain zarr read"][0]
                for name, (w, c) in best.items():
                    print(f"{compression:6s} {rpb:10d} {name:22s} {w:8.3f} {c:8.3f} {w / ref:8.2f}")


if __name__ == "__main__":
    main()
