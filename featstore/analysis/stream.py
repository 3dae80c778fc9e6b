"""Several feature views over one store, read in one pass.

The audit looks at ``audio``, ``video`` and ``audio+video`` of every row; reading each
view with its own :class:`~featstore.store.features.FeatureView` would read (and
decompress) audio and video twice per pass.  Here each needed array is read once per
block of whole chunks and every view is assembled from the same raw parts with
:func:`featstore.store.features.assemble_block`, so the numbers are exactly those every
other stage sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from featstore.common.prefetch import read_ahead
from featstore.store.core import MODALITIES, FeatureStore
from featstore.store.features import COMBINED, FeatureView, assemble_block, feature_view

DEFAULT_BLOCK_ROWS = 16384


@dataclass
class View:
    """One feature view: its name, the store arrays it is made of and its valid rows."""

    name: str
    parts: list[str]
    valid: np.ndarray
    dim: int

    @property
    def is_modality(self) -> bool:
        return self.name in MODALITIES


def resolve_views(store: FeatureStore, names: Sequence[str]) -> list[View]:
    """Check ``names`` against the store (clear error for unknown ones) and describe them."""
    out = []
    seen = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        fv: FeatureView = feature_view(store, name)  # raises InputError for unknown names
        parts = list(MODALITIES) if name == COMBINED else [name]
        out.append(View(name, parts, fv.valid_mask(), fv.dim))
    return out


def iter_views(
    store: FeatureStore,
    views: Sequence[View],
    *,
    rows_per_block: int = DEFAULT_BLOCK_ROWS,
    on_block: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, int, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Yield ``(start, stop, {view: (store_rows, X float32)})`` over whole-chunk blocks.

    Each store array is read once per block and every view assembled from that one
    read, in one read-ahead thread that overlaps the next block with the caller's
    work; ``on_block(stop)`` reports progress.
    """
    arrays = sorted({p for v in views for p in v.parts})
    for a in arrays:
        store.array(a)  # a clear StoreError now for a missing array
    ranges = store.shard_ranges()
    step = max(1, rows_per_block // store.chunk_rows)
    spans = [
        (ranges[i][0], ranges[min(i + step, len(ranges)) - 1][1])
        for i in range(0, len(ranges), step)
    ]

    def blocks() -> Iterator[tuple[int, int, dict[str, tuple[np.ndarray, np.ndarray]]]]:
        # read and assemble here, in the read-ahead thread: the float16 cast and the
        # normalisation of the next block overlap the caller's products on this one
        for s, e in spans:
            if not any(v.valid[s:e].any() for v in views):
                yield s, e, {}
                continue
            # the store's own row reads: chunks decoded in this thread, damage reported
            raw = {a: store.read(a, slice(s, e)) for a in arrays}
            out = {}
            for v in views:
                keep = np.flatnonzero(v.valid[s:e])
                if keep.size == 0:
                    continue
                out[v.name] = assemble_block(
                    [raw[p] for p in v.parts],
                    keep,
                    s,
                    combined=v.name == COMBINED,
                    extra=v.parts[0] not in MODALITIES,
                    what=f"{v.name} of {store.path}",
                )
            yield s, e, out

    for s, e, out in read_ahead(blocks()):
        if on_block is not None:
            on_block(e)
        yield s, e, out
