"""Decoding ahead of the encoder, in worker processes that may crash or hang.

Decoding runs in ``workers`` spawned processes (torch and fork do not mix; spawned
workers import only PyAV/NumPy) that keep a bounded window of clips in flight while
the main process encodes.  A crashed or hung decoder process is replaced and the clip
that killed it is isolated and recorded as failed; the other clips go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from featstore.common.workers import worker_pool
from featstore.extract.config import ExtractConfig
from featstore.extract.decode import decode_row
from featstore.extract.encoders import Encoder
from featstore.extract.manifest import Manifest
from featstore.extract.specs import DecodedClip

#: what the feed yields per row: the clip, or None and the reason it failed
Decoded = tuple[int, DecodedClip | None, str | None]


class DecodeFeed:
    """Yields ``(row, clip|None, reason|None)`` in row order, decoding ahead in workers.

    A bounded window of clips is in flight; if a worker dies (decoder crash) or a
    clip exceeds the timeout, the pool is replaced and the in-flight clips are
    retried one at a time so only the culprit is marked failed.
    """

    def __init__(
        self,
        manifest: Manifest,
        rows: Sequence[int],
        encoders: dict[str, Encoder],
        config: ExtractConfig,
    ):
        self.manifest = manifest
        self.rows = list(rows)
        self.video_spec = encoders["video"].video_spec if "video" in encoders else None
        self.audio_spec = encoders["audio"].audio_spec if "audio" in encoders else None
        self.workers = config.workers
        self.timeout = config.decode_timeout
        self.ctx = mp.get_context(config.mp_context) if config.workers else None
        self.window = max(2 * config.batch_size, 4 * max(config.workers, 1))
        self.pool: cf.ProcessPoolExecutor | None = None

    def _args(self, row: int) -> tuple[Any, ...]:
        e = self.manifest.entries[row]
        return (
            row,
            str(e.path),
            None if e.audio_path is None else str(e.audio_path),
            e.id,
            self.video_spec,
            self.audio_spec,
        )

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return worker_pool(self.workers, self.ctx)  # workers die with this process

    def _kill_pool(self) -> None:
        if self.pool is None:
            return
        procs = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # our own worker processes, by handle
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
        self.pool = None

    def _isolated(self, row: int) -> Decoded:
        """Decode one clip alone in a fresh pool (after a crash), recording a crash as its failure."""
        self.pool = self._new_pool()
        fut = self.pool.submit(decode_row, *self._args(row))
        try:
            return fut.result(timeout=self.timeout)
        except cf.TimeoutError:
            return (
                row,
                None,
                f"decoding took longer than {self.timeout:.0f} s (decoder hung); skipped",
            )
        except cf.process.BrokenProcessPool:
            return row, None, "the decoder crashed on this file (worker process died)"
        finally:
            self._kill_pool()

    def __iter__(self) -> Iterator[Decoded]:
        if not self.workers:
            for row in self.rows:
                yield decode_row(*self._args(row))
            return
        pending: deque[tuple[int, cf.Future[Decoded]]] = deque()
        todo = deque(self.rows)
        self.pool = self._new_pool()
        try:
            while todo or pending:
                while todo and len(pending) < self.window:
                    row = todo.popleft()
                    pending.append((row, self.pool.submit(decode_row, *self._args(row))))
                row, fut = pending.popleft()
                try:
                    yield fut.result(timeout=self.timeout)
                    continue
                except (cf.TimeoutError, cf.process.BrokenProcessPool):
                    pass
                # the pool is unusable: isolate every clip that was in flight
                retry = [row] + [r for r, _ in pending]
                pending.clear()
                self._kill_pool()
                for r in retry:
                    yield self._isolated(r)
                self.pool = self._new_pool()
        finally:
            self._kill_pool()
