"""Rendering of ``diccae store info``: :func:`featstore.store.info.store_info` as rich tables."""

from __future__ import annotations

import json
from typing import Any


def human_bytes(n: int) -> str:
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
        f"{info['dtype']} ({info['compression']}), {info['chunk_rows']} rows per chunk ({info['n_chunks']} chunks), {human_bytes(info['bytes_on_disk'])} on disk",
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
            human_bytes(m["bytes"]),
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
                human_bytes(e["bytes"]),
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
