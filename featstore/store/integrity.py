"""Store integrity: tell "not written yet" from "written, then lost or damaged".

Zarr reads an absent chunk as its fill value, so a deleted chunk file would be
read as zeros (or label -1) without a word.  Three records let every reader tell
the two cases apart, and ``diccae store verify`` check everything:

* **a seal** in the group attributes (``integrity``): a digest of every other
  attribute and the shape/chunks/dtype of every array.  Checked at every open, so
  an edited ``fingerprint``, ``class_names``, ``dtype`` or ``chunk_rows`` and an
  absurd array shape are refused before anything is read or allocated;
* **a chunk ledger** under ``STORE/integrity/`` (a Zarr sub-group, so Zarr ignores
  its files): ``created.json`` for the arrays filled at creation, one
  ``chunks/<i>.json`` per chunk written by :meth:`FeatureStore.write_rows` (written
  *after* the status, so a record always means "these rows were done"), and
  ``extra-<name>.json`` for feature arrays added later.  Each names the chunk
  files that exist and their CRC-32;
* ``write_empty_chunks`` is on for every diccae store, so a written chunk always
  has a file, even when its values equal the fill value.

Stores made before the seal existed (no ``integrity`` attribute) still get the
shape checks and the "done rows need their embedding chunk" rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import DiccaeError, StoreDamaged

INTEGRITY_VERSION = 1
LEDGER_GROUP = "integrity"
#: row arrays filled once, for every row, when the store is created
CREATION_ARRAYS = ("ids", "paths", "split", "label")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def array_layout(arr: Any) -> dict[str, Any]:
    return {"shape": list(arr.shape), "chunks": list(arr.chunks), "dtype": str(arr.dtype)}


def seal(attrs: dict[str, Any], layouts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``integrity`` attribute for these attributes and array layouts."""
    return {
        "version": INTEGRITY_VERSION,
        "attrs": {k: _digest(v) for k, v in sorted(attrs.items()) if k != "integrity"},
        "layout": layouts,
    }


def seal_problems(
    attrs: dict[str, Any], layouts: dict[str, dict[str, Any]], unreadable: set[str]
) -> tuple[list[str], list[str]]:
    """Differences between the recorded seal and the attributes / the readable arrays."""
    sealed = attrs.get("integrity")
    if not isinstance(sealed, dict):
        return [], []
    problems: list[str] = []
    arrays: list[str] = []
    want = sealed.get("attrs", {})
    for key in sorted(set(want) | {k for k in attrs if k != "integrity"}):
        if key not in attrs:
            problems.append(f"attribute {key!r} was removed")
        elif key not in want:
            problems.append(f"attribute {key!r} was added by hand")
        elif _digest(attrs[key]) != want[key]:
            problems.append(f"attribute {key!r} was changed after the store was written")
    for name, layout in sorted(sealed.get("layout", {}).items()):
        got = layouts.get(name)
        if name in unreadable:
            continue
        if got is None:
            arrays.append(f"array {name!r} is missing")
        elif got != layout:
            arrays.append(
                f"array {name!r} has shape {got['shape']}, chunks {got['chunks']}, dtype {got['dtype']}; "
                f"it was written as {layout['shape']}, {layout['chunks']}, {layout['dtype']}"
            )
    return problems, arrays


# ------------------------------------------------------------------ chunk files
def chunk_path(store_path: Path, name: str, arr: Any, chunk: int) -> Path:
    key = arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))
    return store_path / name / key


def present_chunks(store_path: Path, name: str, ndim: int) -> set[int]:
    """Row-chunk indices of ``name`` that have a chunk file (one directory scan)."""
    base = store_path / name / "c"
    try:
        entries = os.listdir(base)
    except FileNotFoundError:
        return set()
    out = set()
    tail = ("0",) * (ndim - 1)
    for e in entries:
        if e.isdigit() and (not tail or (base / e).joinpath(*tail).is_file()):
            out.add(int(e))
    return out


def crc_file(path: Path) -> int | None:
    try:
        return zlib.crc32(path.read_bytes())
    except FileNotFoundError:
        return None


def _ledger_dir(store_path: Path) -> Path:
    return store_path / LEDGER_GROUP


def _write_json(path: Path, doc: Any) -> None:
    from featstore.common.fileio import atomic_write

    atomic_write(path, lambda f: f.write(json.dumps(doc).encode()))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreDamaged(f"{path}: integrity record is damaged ({exc})") from None


def record(
    store_path: Path, arrays: dict[str, Any], chunks: list[int]
) -> dict[str, list[int | None]]:
    """CRC-32 of each chunk file of ``arrays`` for ``chunks`` (None: no file)."""
    return {
        name: [crc_file(chunk_path(store_path, name, arr, c)) for c in chunks]
        for name, arr in arrays.items()
    }


def write_created(store_path: Path, arrays: dict[str, Any], n_chunks: int) -> None:
    _write_json(
        _ledger_dir(store_path) / "created.json", record(store_path, arrays, list(range(n_chunks)))
    )


def write_extra(store_path: Path, name: str, arr: Any, n_chunks: int) -> None:
    _write_json(
        _ledger_dir(store_path) / f"extra-{name}.json",
        record(store_path, {name: arr}, list(range(n_chunks))),
    )


def remove_extra(store_path: Path, name: str) -> None:
    (_ledger_dir(store_path) / f"extra-{name}.json").unlink(missing_ok=True)


def write_chunk(store_path: Path, chunk: int, arrays: dict[str, Any]) -> None:
    """Record one chunk after its status was written (see module docstring)."""
    crcs = {name: v[0] for name, v in record(store_path, arrays, [chunk]).items()}
    _write_json(_ledger_dir(store_path) / "chunks" / f"{chunk}.json", crcs)


def recorded_chunks(store_path: Path) -> set[int]:
    try:
        names = os.listdir(_ledger_dir(store_path) / "chunks")
    except FileNotFoundError:
        return set()
    return {int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()}


def chunk_record(store_path: Path, chunk: int) -> dict[str, int | None] | None:
    return _read_json(_ledger_dir(store_path) / "chunks" / f"{chunk}.json")


def created_record(store_path: Path) -> dict[str, list[int | None]] | None:
    return _read_json(_ledger_dir(store_path) / "created.json")


def extra_record(store_path: Path, name: str) -> list[int | None] | None:
    doc = _read_json(_ledger_dir(store_path) / f"extra-{name}.json")
    return None if doc is None else doc.get(name)


def rows_text(s: int, e: int) -> str:
    return f"row {s}" if e - s == 1 else f"rows {s}-{e - 1}"


def damaged(store_path: Path, name: str, chunk: int, s: int, e: int, what: str) -> StoreDamaged:
    return StoreDamaged(
        f"{store_path}: array {name!r} chunk {chunk} ({rows_text(s, e)}) {what}; the store is damaged "
        f"(`diccae store verify {store_path}` lists every problem)"
    )


# ------------------------------------------------------------------------ verify
def check_chunks_present(store: Any, name: str) -> None:
    """Raise :class:`StoreDamaged` if a chunk of array ``name`` is absent although written.

    The rule per array: rows filled at creation (ids, labels ...) need every chunk the
    creation record lists; extra feature arrays every chunk their record lists; row
    arrays and embeddings every chunk the ledger records as done, and (for stores
    without a ledger) an embedding chunk wherever a done row has that stream.
    """
    from featstore.store.schema import MODALITIES, ROW_ARRAYS, STATUS_DONE

    arr = store.array(name)
    path = store.path
    ranges = store.shard_ranges()
    have = present_chunks(path, name, arr.ndim)
    sealed = isinstance(store.attrs.get("integrity"), dict)
    expected: dict[int, str] = {}
    if name in CREATION_ARRAYS and sealed:
        created = created_record(path) or {}
        for c, crc in enumerate(created.get(name, [0] * len(ranges))):
            if crc is not None:
                expected[c] = "is missing although it was written when the store was created"
    elif name not in MODALITIES and name not in ROW_ARRAYS:
        recorded_extra = extra_record(path, name)
        for c, crc in enumerate(recorded_extra or []):
            if crc is not None:
                expected[c] = "is missing although the array was written"
    else:
        recorded = recorded_chunks(path)
        missing_recorded = sorted(c for c in recorded if c not in have and c < len(ranges))
        for c in missing_recorded:
            rec = chunk_record(path, c) or {}
            if rec.get(name) is not None:
                expected[c] = "is missing although its rows are done"
        if name in MODALITIES:  # also stores without a ledger: done rows need data
            unrecorded = [c for c in range(len(ranges)) if c not in have and c not in recorded]
            if unrecorded:
                st = store.status()
                miss = store.missing(name)
                for c in unrecorded:
                    s, e = ranges[c]
                    if ((st[s:e] == STATUS_DONE) & ~miss[s:e]).any():
                        expected[c] = "is missing although its rows are done"
    for c in sorted(expected):
        if c not in have and c < len(ranges):
            s, e = ranges[c]
            raise damaged(path, name, c, s, e, expected[c])


def verify_store(store: Any) -> dict[str, Any]:
    """Full integrity pass: seal, fingerprint, every expected chunk present, CRC and decodable.

    Returns ``{"ok", "problems", "chunks", "bytes", "seconds", "mb_per_s"}``; reads every
    chunk once, so it costs about one plain read of the store plus the CRC.
    """
    from featstore.store.schema import MODALITIES, STATUS_PENDING

    t0 = time.perf_counter()
    path = store.path
    problems: list[str] = list(store.open_problems())
    nbytes = 0
    n_chunks_checked = 0
    ranges = store.shard_ranges()
    names = [n for n in store.array_names()]
    created = created_record(path) or {}
    recorded = recorded_chunks(path)
    records = {c: chunk_record(path, c) or {} for c in recorded}
    sealed = isinstance(store.attrs.get("integrity"), dict)
    status = None
    for name in names:
        arr = store.array(name)
        have = present_chunks(path, name, arr.ndim)
        extra = extra_record(path, name) if name not in created and name not in MODALITIES else None
        for c, (s, e) in enumerate(ranges):
            want: int | None | bool = False  # False: no expectation
            if name in created:
                want = created[name][c] if c < len(created[name]) else False
            elif extra is not None:
                want = extra[c] if c < len(extra) else False
            elif c in recorded:
                want = records[c].get(name, False)
            elif sealed and name in CREATION_ARRAYS:
                want = True
            if want not in (False, None) and c not in have:
                problems.append(f"array {name!r} chunk {c} ({rows_text(s, e)}): chunk file missing")
                continue
            if c not in have:
                continue
            f = chunk_path(path, name, arr, c)
            try:
                raw = f.read_bytes()
            except OSError as exc:
                problems.append(f"array {name!r} chunk {c} ({rows_text(s, e)}): unreadable ({exc})")
                continue
            nbytes += len(raw)
            n_chunks_checked += 1
            if isinstance(want, int) and not isinstance(want, bool) and zlib.crc32(raw) != want:
                problems.append(
                    f"array {name!r} chunk {c} ({rows_text(s, e)}): checksum differs from the one written"
                )
            try:
                block = np.asarray(arr[s:e])
            except Exception as exc:  # noqa: BLE001 - any decoder failure is damage
                problems.append(
                    f"array {name!r} chunk {c} ({rows_text(s, e)}): does not decode ({type(exc).__name__}: {exc})"
                )
                continue
            if name == "status":
                if status is None:
                    status = np.zeros(store.n_rows, np.uint8)
                status[s:e] = block
    # done rows need their status and data (rule for stores without a chunk ledger too)
    if status is not None or recorded:
        status = status if status is not None else np.zeros(store.n_rows, np.uint8)
        st_have = present_chunks(path, "status", 1)
        for c in sorted(recorded):
            if c < len(ranges) and c not in st_have:
                s, e = ranges[c]
                problems.append(
                    f"array 'status' chunk {c} ({rows_text(s, e)}): missing although the rows were recorded done"
                )
        for m in store.modalities:
            have = present_chunks(path, m, 2)
            for c, (s, e) in enumerate(ranges):
                if c not in have and c not in recorded and (status[s:e] != STATUS_PENDING).any():
                    problems.append(
                        f"array {m!r} chunk {c} ({rows_text(s, e)}): missing although rows are done"
                    )
    try:
        problems.extend(store.fingerprint_problems())
    except DiccaeError as exc:
        problems.append(str(exc))
    seconds = time.perf_counter() - t0
    return {
        "ok": not problems,
        "problems": problems,
        "chunks": n_chunks_checked,
        "bytes": nbytes,
        "seconds": seconds,
        "mb_per_s": nbytes / 1e6 / seconds if seconds > 0 else 0.0,
    }
