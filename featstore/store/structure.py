"""The structure of a store as found on disk, checked at every open without reading data.

:func:`structural_problems` lists missing or unreadable arrays, shapes that disagree
with the attributes and attributes edited after writing (via the seal kept by
:func:`reseal`; see featstore/store/integrity.py).  Chunk-level damage is found
later, by the readers and by ``diccae store verify``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr

import featstore.store.integrity as integrity
from featstore.store.schema import ModalitySpec


def array_layouts(group: zarr.Group) -> dict[str, dict[str, Any]]:
    return {name: integrity.array_layout(group[name]) for name in sorted(group.array_keys())}


def reseal(group: zarr.Group) -> None:
    """Record a digest of the attributes and array layouts (see featstore.store.integrity)."""
    group.attrs["integrity"] = integrity.seal(
        {k: v for k, v in group.attrs.items() if k != "integrity"}, array_layouts(group)
    )


def structural_problems(path: Path, group: zarr.Group) -> list[str]:
    """Structural damage found without reading data: missing or unreadable arrays,
    shapes that disagree with the attributes, attributes edited after writing."""
    problems: list[str] = []
    attrs: dict[str, Any] = dict(group.attrs)
    try:
        n = int(attrs["n_rows"])
        chunk_rows = int(attrs["chunk_rows"])
        specs = {k: ModalitySpec.from_json(v) for k, v in attrs["modalities"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        return [f"store attributes are incomplete or malformed ({type(exc).__name__}: {exc})"]
    required = ["status", "ids", "paths", "split", "error", "label"]
    for m in specs:
        required += [m, f"{m}_missing"]
    layouts: dict[str, dict[str, Any]] = {}
    unreadable: set[str] = set()
    names = set()
    sealed = (
        attrs.get("integrity", {}).get("layout", {})
        if isinstance(attrs.get("integrity"), dict)
        else {}
    )
    for entry in sorted(path.iterdir()) if path.is_dir() else []:
        # a folder without zarr.json is not a Zarr node (Zarr ignores it too)
        if (
            entry.name != integrity.LEDGER_GROUP
            and not entry.name.startswith(".")
            and (entry / "zarr.json").exists()
        ):
            names.add(entry.name)
    for name in sorted(names | set(required) | set(sealed)):
        checked = name in required or name in sealed  # other nodes are not ours to judge
        if not (path / name / "zarr.json").is_file():
            if name in required:
                what = "folder" if not (path / name).is_dir() else "metadata file"
                where = path / name if what == "folder" else path / name / "zarr.json"
                problems.append(f"array {name!r} is missing ({what} {where} not found)")
                unreadable.add(name)
            continue
        try:
            arr = group[name]
            if not isinstance(arr, zarr.Array):
                if checked:
                    problems.append(f"{name!r} is not an array")
                continue
            layouts[name] = integrity.array_layout(arr)
        except Exception as exc:  # noqa: BLE001 - a truncated zarr.json raises anything
            if checked:
                problems.append(
                    f"array {name!r} metadata ({path / name / 'zarr.json'}) is unreadable "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                )
                unreadable.add(name)
            continue
        if not checked:
            continue
        shape = layouts[name]["shape"]
        if not shape or shape[0] != n or (arr.chunks[0] != chunk_rows and n > 0):
            problems.append(
                f"array {name!r} has shape {shape} and chunks {list(arr.chunks)}; "
                f"the store has {n} rows in chunks of {chunk_rows}"
            )
        elif name in specs and (len(shape) != 2 or shape[1] != specs[name].dim):
            problems.append(
                f"array {name!r} has shape {shape}; its encoder writes {specs[name].dim} columns"
            )
    # an edited attribute is the cause of any shape disagreement it brings: name it first
    edited, arrays = integrity.seal_problems(attrs, layouts, unreadable)
    return edited + problems + arrays
