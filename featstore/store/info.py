"""What is in a store: one dictionary for programs, one rich rendering for people.

``diccae store info`` prints :func:`render_store_info` of :func:`store_info`; ``--json``
prints the dictionary itself, so a script sees exactly what a person sees.  Nothing here
writes to the store, and large arrays are only read chunk by chunk.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from featstore.store.core import MODALITIES, FeatureStore


def _as_store(store: FeatureStore | str | Path) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore.open(store)


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rows_with_values(store: FeatureStore, name: str) -> int:
    """Rows of an extra feature array that hold numbers (NaN marks 'not computed')."""
    total = 0
    for s, e in store.shard_ranges():
        block = np.asarray(store.read(name, slice(s, e)), dtype=np.float32)
        total += int(np.isfinite(block).all(axis=1).sum())
    return total


def _class_table(store: FeatureStore) -> list[dict[str, Any]]:
    """One entry per class name and per label value that occurs, with row counts."""
    labels = store.labels
    status = store.status()
    names = store.class_names
    total = Counter(labels.tolist())
    done = Counter(labels[status == 1].tolist())
    ids = sorted(set(range(len(names))) | {k for k in total if k >= 0})
    out = [
        {
            "label": int(k),
            "name": names[k] if 0 <= k < len(names) else None,
            "rows": int(total.get(k, 0)),
            "done": int(done.get(k, 0)),
        }
        for k in ids
    ]
    if total.get(-1):
        out.append(
            {"label": -1, "name": None, "rows": int(total[-1]), "done": int(done.get(-1, 0))}
        )
    return out


def store_info(store: FeatureStore | str | Path, *, failures: bool = False) -> dict[str, Any]:
    """Summarise a store as JSON-serialisable data.

    Keys: ``path``, ``format``, ``format_version``, ``diccae_version``, ``source``,
    ``fingerprint``, ``manifest_sha256``, ``n_rows``, ``status`` (done/failed/pending),
    ``dtype``, ``chunk_rows``, ``n_chunks``, ``bytes_on_disk``, ``modalities`` (per
    modality encoder, weights, pretrained, dim, config, rows missing, bytes), ``classes``
    (label, name, rows, done), ``splits`` (name -> rows), ``extra_arrays`` (name -> dim,
    dtype, rows with values, attrs, bytes) and, with ``failures=True``, ``failures``
    (row, id, path, reason for every failed clip).
    """
    store = _as_store(store)
    attrs = store.attrs
    status = store.counts()
    modalities = {}
    for name, spec in store.modalities.items():
        store.check_chunks(name)  # a deleted chunk of done rows is damage, not "0 missing"
        modalities[name] = {
            "encoder": spec.encoder,
            "weights": spec.weights,
            "pretrained": spec.pretrained,
            "dim": spec.dim,
            "config": spec.config,
            "missing": int(store.missing(name).sum()),
            "bytes": _dir_bytes(store.path / name),
        }
    extra = {}
    for name in store.feature_arrays():
        if name in MODALITIES:
            continue
        arr = store.array(name)
        extra[name] = {
            "dim": int(arr.shape[1]),
            "dtype": str(arr.dtype),
            "rows_with_values": _rows_with_values(store, name),
            "attrs": dict(arr.attrs),
            "bytes": _dir_bytes(store.path / name),
        }
    splits = Counter(str(s) for s in store.splits.tolist())
    info: dict[str, Any] = {
        "path": str(store.path),
        "format": attrs.get("format"),
        "format_version": attrs.get("format_version"),
        "diccae_version": attrs.get("diccae_version"),
        "source": attrs.get("source"),
        "fingerprint": store.fingerprint,
        "manifest_sha256": attrs.get("manifest_sha256", ""),
        "n_rows": store.n_rows,
        "status": status,
        "dtype": store.dtype,
        "compression": store.compression,
        "chunk_rows": store.chunk_rows,
        "n_chunks": len(store.shard_ranges()),
        "bytes_on_disk": store.bytes_on_disk(),
        "modalities": modalities,
        "classes": _class_table(store),
        "splits": dict(sorted(splits.items())),
        "extra_arrays": extra,
    }
    if failures:
        info["failures"] = [
            {"row": f.row, "id": f.id, "path": f.path, "reason": f.reason} for f in store.failures()
        ]
    return info


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def render_store_info(info: dict[str, Any], console: Any = None, *, max_classes: int = 50) -> None:
    """Print :func:`store_info`'s dictionary as rich tables (to ``console`` or stdout)."""
    from rich.console import Console
    from rich.markup import escape as esc
    from rich.table import Table

    console = console or Console()
    st = info["status"]
    n = info["n_rows"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("store", esc(info["path"]))
    head.add_row(
        "format",
        esc(
            f"{info['format']} v{info['format_version']} (diccae {info['diccae_version']}, source {info['source']})"
        ),
    )
    head.add_row(
        "rows",
        f"{n}: [green]{st['done']} done[/], [red]{st['failed']} failed[/], [yellow]{st['pending']} pending[/]",
    )
    head.add_row(
        "storage",
        f"{info['dtype']} ({info['compression']}), {info['chunk_rows']} rows per chunk ({info['n_chunks']} chunks), {_human_bytes(info['bytes_on_disk'])} on disk",
    )
    head.add_row("fingerprint", info["fingerprint"])
    head.add_row("manifest sha256", info["manifest_sha256"] or "-")
    if info["splits"]:
        head.add_row(
            "splits", esc(", ".join(f"{k or '(none)'}: {v}" for k, v in info["splits"].items()))
        )
    console.print(head)

    mods = Table(title="modalities", title_justify="left")
    for col in ("modality", "encoder", "dim", "weights", "pretrained", "missing", "size"):
        mods.add_column(col, overflow="fold")
    for name, m in info["modalities"].items():
        pre = (
            "[green]yes[/]"
            if m["pretrained"]
            else "[yellow]no[/]"
            if m["weights"] in ("random", "unknown")
            else "no"
        )
        mods.add_row(
            esc(name),
            esc(m["encoder"]),
            str(m["dim"]),
            esc(m["weights"]),
            pre,
            str(m["missing"]),
            _human_bytes(m["bytes"]),
        )
    console.print(mods)
    for name, m in info["modalities"].items():
        if m["config"]:
            config = json.dumps(m["config"], default=str)
            console.print(
                f"[bold]{esc(name)} config[/] {esc(config)}",
                highlight=False,
                soft_wrap=False,
                overflow="fold",
            )

    if info["extra_arrays"]:
        extra = Table(title="extra feature arrays", title_justify="left")
        for col in ("name", "dim", "dtype", "rows with values", "size", "attrs"):
            extra.add_column(col, overflow="fold")
        for name, e in info["extra_arrays"].items():
            attrs = ", ".join(f"{k}={v}" for k, v in e["attrs"].items())
            extra.add_row(
                esc(name),
                str(e["dim"]),
                e["dtype"],
                f"{e['rows_with_values']}/{n}",
                _human_bytes(e["bytes"]),
                esc(attrs),
            )
        console.print(extra)

    if info["classes"]:
        classes = Table(
            title=f"classes ({sum(c['label'] >= 0 for c in info['classes'])})", title_justify="left"
        )
        for col in ("label", "name", "rows", "done"):
            classes.add_column(col, justify="right" if col in ("label", "rows", "done") else "left")
        shown = info["classes"][:max_classes]
        for c in shown:
            name = c["name"] if c["name"] is not None else ("(unknown)" if c["label"] < 0 else "-")
            classes.add_row(str(c["label"]), esc(name), str(c["rows"]), str(c["done"]))
        if len(info["classes"]) > max_classes:
            classes.add_row(
                "...", f"{len(info['classes']) - max_classes} more (see --json)", "", ""
            )
        console.print(classes)

    if "failures" in info:
        if not info["failures"]:
            console.print("no failed clips")
        else:
            fails = Table(title=f"failed clips ({len(info['failures'])})", title_justify="left")
            for col in ("row", "id", "path", "reason"):
                fails.add_column(col, overflow="fold")
            for f in info["failures"]:
                fails.add_row(str(f["row"]), esc(f["id"]), esc(f["path"]), esc(f["reason"]))
            console.print(fails)
