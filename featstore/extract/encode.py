"""Encoding one chunk of rows: batches in row order, one bad clip never sinks a batch.

Encoder batches are consecutive decodable clips of one chunk in row order, so a
resumed run (or a Dask task) forms exactly the batches an uninterrupted run forms
(batch composition can change floating-point results).  A batch that fails is
retried clip by clip and only the culprit is recorded as failed; a non-finite
embedding, or one beyond the float16 range of a float16 store, fails its row too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from featstore.extract.config import ExtractConfig
from featstore.extract.encoders import Encoder
from featstore.extract.specs import DecodedClip
from featstore.store.core import FeatureStore

FLOAT16_MAX = float(np.finfo(np.float16).max)


class ChunkBuffer:
    """Rows of one chunk: encodes full batches as they fill, writes the chunk when complete."""

    def __init__(
        self, start: int, stop: int, encoders: dict[str, Encoder], batch_size: int, dtype: str
    ):
        self.start, self.stop = start, stop
        n = stop - start
        self.encoders = encoders
        self.batch_size = batch_size
        self.dtype = dtype
        self.emb = {m: np.zeros((n, e.dim), np.float32) for m, e in encoders.items()}
        self.missing = {m: np.zeros(n, bool) for m in encoders}
        self.failed: dict[int, str] = {}
        self.queue: dict[str, list[tuple[int, np.ndarray]]] = {m: [] for m in encoders}
        self.seen = 0

    @property
    def complete(self) -> bool:
        return self.seen == self.stop - self.start

    def add(self, row: int, clip: DecodedClip | None, reason: str | None) -> None:
        self.seen += 1
        if clip is None:
            self.failed[row] = reason or "unknown decode error"
            return
        for m in self.encoders:
            data = clip.video if m == "video" else clip.audio
            if data is None:
                self.missing[m][row - self.start] = True
            else:
                self.queue[m].append((row, data))
                if len(self.queue[m]) >= self.batch_size:
                    self._flush(m)

    def _flush(self, m: str) -> None:
        batch, self.queue[m] = self.queue[m], []
        if not batch:
            return
        enc = self.encoders[m]
        try:
            out = enc.encode([d for _, d in batch])
            results = list(zip([r for r, _ in batch], out, strict=True))
        except Exception:  # one bad clip must not sink its batch: retry one by one
            results = []
            for row, data in batch:
                try:
                    results.append((row, enc.encode([data])[0]))
                except Exception as exc:
                    self.failed[row] = (
                        f"{m} encoder {enc.name} failed: {type(exc).__name__}: {str(exc)[:200]}"
                    )
        for row, vec in results:
            if row in self.failed:
                continue
            if not np.isfinite(vec).all():
                self.failed[row] = f"{m} encoder {enc.name} produced NaN/Inf"
            elif self.dtype == "float16" and np.abs(vec).max(initial=0) > FLOAT16_MAX:
                self.failed[row] = f"{m} embedding exceeds the float16 range; use --dtype float32"
            else:
                self.emb[m][row - self.start] = vec

    def write(self, store: FeatureStore) -> None:
        for m in self.encoders:
            self._flush(m)
        for row in self.failed:  # failed rows carry no data
            for m in self.encoders:
                self.emb[m][row - self.start] = 0
                self.missing[m][row - self.start] = False
        store.write_rows(
            self.start,
            embeddings=self.emb,
            missing=self.missing,
            failed=dict(sorted(self.failed.items())),
        )


@contextlib.contextmanager
def encode_threads(config: ExtractConfig, encoders: dict[str, Encoder]) -> Iterator[None]:
    """Choose torch's CPU threads so the slower stage gets the cores.

    Light, weightless front ends (fbank, frame statistics) encode far faster than
    clips decode: they get the cores the decode workers leave free, because idle
    OpenMP threads spin after each parallel region and would steal the decoders'
    CPU time.  Neural encoders on the CPU are the slow stage by a wide margin
    (r3d_18: ~1.5 clips/s against ~8 clips/s decoding on 2 cores), so they get every
    core and the decoders, blocked on a full queue most of the time, fill the gaps.
    """
    import torch

    on_cpu = all(not str(e.device).startswith("cuda") for e in encoders.values())
    cores = os.cpu_count() or 1
    neural = any(e.spec().weights != "none" for e in encoders.values())
    if config.encode_threads:
        wanted = config.encode_threads
    elif not on_cpu:
        wanted = None
    else:
        wanted = cores if neural else max(1, cores - config.workers)
    before = torch.get_num_threads()
    if wanted:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)
