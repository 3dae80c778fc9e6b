"""Decoded store rows kept in memory between passes, within a byte quota.

A stage that streams a store many times (k-means: one pass per Lloyd iteration)
decodes every chunk again on each pass.  From a zstd store that decoding is most of a
pass's reading cost: on the 2-core machine, one pass over 200,000 x 512 float16 rows
took 0.245 CPU-s, of which 0.047 remained once the decoded chunks were in memory
(the cast to float32 and the per-row normalisation, which every pass still does).

:class:`PartCache` keeps the *decoded* parts (the stored dtype, before the cast), not
the float32 blocks a stage sees: half the bytes for float16 stores, and the view's
numbers are still made by :func:`featstore.store.blocks.assemble_block` on every
pass, so a run with the cache gives exactly the bits of a run without it.  It keeps
the first blocks of a pass until the quota is reached and then stops filling, so
every later pass finds the same blocks there (no eviction, no thrashing).
"""

from __future__ import annotations

import numpy as np


class PartCache:
    """The decoded parts of a view's first blocks, ``(start, stop) -> [part arrays]``.

    ``quota_bytes``: the most the kept arrays may hold.  Filling stops at the first
    block that does not fit.  Not thread-safe: one pass at a time (the reader's thread).
    The kept arrays must not be written to; :func:`assemble_block` only reads them.
    """

    def __init__(self, quota_bytes: int) -> None:
        self.quota_bytes = max(0, int(quota_bytes))
        self.nbytes = 0
        self.rows = 0  # store rows the kept blocks span
        self._blocks: dict[tuple[int, int], list[np.ndarray]] = {}
        self._closed = self.quota_bytes == 0

    def get(self, start: int, stop: int) -> list[np.ndarray] | None:
        """The parts kept for store rows ``start:stop``, or None."""
        return self._blocks.get((start, stop))

    def offer(self, start: int, stop: int, parts: list[np.ndarray]) -> None:
        """Keep ``parts`` (rows ``start:stop``) if they fit; the first block that does not closes the cache."""
        if self._closed or (start, stop) in self._blocks:
            return
        size = sum(int(p.nbytes) for p in parts)
        if self.nbytes + size > self.quota_bytes:
            self._closed = True
            return
        self._blocks[(start, stop)] = parts
        self.nbytes += size
        self.rows += stop - start

    def __len__(self) -> int:
        return len(self._blocks)
