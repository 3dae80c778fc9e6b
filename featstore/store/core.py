"""The feature store: embeddings of every clip in one chunked Zarr v3 group.

Layout (see docs/store-format.md for the full contract)::

    STORE/                      zarr v3 group, attributes describe the whole store
      audio     (N, Da)  float16|float32   chunked (chunk_rows, Da)
      video     (N, Dv)  float16|float32   chunked (chunk_rows, Dv)
      status    (N,)     uint8   0 pending, 1 done, 2 failed
      audio_missing / video_missing (N,) bool   clip has no such stream
      ids, paths, split, error (N,) strings;  label (N,) int32 (-1 unknown)
      <other 2-D arrays>  e.g. fused features written by the trainer

Every row array is chunked by the same ``chunk_rows`` so that a *shard* (one chunk
of rows) can be read, written or handed to a worker on its own.  Writers fill whole
shards and write the data before the status, and zarr's LocalStore replaces chunk
files atomically, so a killed writer never leaves a row marked done without data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from featstore.errors import DiccaeError, InputError, StoreConfigMismatch, StoreDamaged, StoreError
from featstore.store import integrity

# every written chunk gets a file, even one equal to the fill value, so that "no chunk
# file" can only mean "never written" (see featstore/store/integrity.py)
zarr.config.set({"array.write_empty_chunks": True})

FORMAT_NAME = "diccae-featstore"
FORMAT_VERSION = 1
MODALITIES = ("audio", "video")

STATUS_PENDING = 0
STATUS_DONE = 1
STATUS_FAILED = 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_DONE: "done", STATUS_FAILED: "failed"}

#: arrays every store has, one entry per row; not "features"
ROW_ARRAYS = ("status", "audio_missing", "video_missing", "ids", "paths", "split", "error", "label")
DTYPES = ("float16", "float32")
#: codecs for the embedding arrays.  zstd saves ~30% disk on typical embeddings but a
#: full pass decompresses every chunk (about 4x the read time of "none" on 2 cores);
#: "none" suits local disks and stores that are streamed every iteration or epoch.
COMPRESSIONS = ("zstd", "none")


def _compressors(compression: str) -> Any:
    if compression == "zstd":
        return "auto"
    if compression == "none":
        return None
    raise InputError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


def diccae_version() -> str:
    try:
        from importlib.metadata import version

        return version("diccae")
    except Exception:
        return "0+unknown"


@dataclass(frozen=True)
class ModalitySpec:
    """What produced one modality's embeddings; saved in the store attributes.

    ``weights`` identifies the parameters: a torchvision/torchaudio enum name, the
    ``sha256:...`` of a local checkpoint, ``"random"`` (initialised, not trained) or
    ``"none"`` (weightless front end).  ``pretrained`` is true only for real trained
    weights, so nobody mistakes a random-init store for a pretrained one.
    """

    encoder: str
    dim: int
    weights: str = "none"
    pretrained: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModalitySpec:
        return cls(
            encoder=str(d["encoder"]),
            dim=int(d["dim"]),
            weights=str(d.get("weights", "none")),
            pretrained=bool(d.get("pretrained", False)),
            config=dict(d.get("config", {})),
        )


@dataclass(frozen=True)
class Failure:
    row: int
    id: str
    path: str
    reason: str


@dataclass(frozen=True)
class Shard:
    """One chunk-aligned row range and the arrays read for it."""

    start: int
    stop: int
    data: dict[str, np.ndarray]

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.stop)


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _strings(
    values: Sequence[str] | np.ndarray | None, n: int, what: str, default: str = ""
) -> np.ndarray:
    if values is None:
        return np.array([default] * n, dtype=object)
    arr = np.asarray([str(v) for v in values], dtype=object)
    if arr.shape != (n,):
        raise InputError(f"expected {n} {what} values (one per row), got {arr.shape[0]}")
    return arr


def is_store_dir(path: Path) -> bool:
    """True when ``path`` holds a diccae store (checked before anything deletes it)."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT_NAME
    except (OSError, ValueError):
        return False


_TEMP_TAGS = ("creating", "importing", "replaced")


def temp_store_path(final: Path, tag: str) -> Path:
    """Hidden sibling where a new store is built before :func:`replace_store_dir`."""
    assert tag in _TEMP_TAGS
    return final.with_name(f".{final.name}.{tag}-{os.getpid()}")


def remove_stale_temps(final: Path) -> None:
    """Delete hidden siblings left by a run that was killed while building ``final``.

    A sibling whose pid suffix names another live process belongs to a running
    writer and is never touched (the writer lock normally rules that out anyway).
    """
    from featstore.common.lock import pid_alive

    for tag in _TEMP_TAGS:
        for stale in final.parent.glob(f".{final.name}.{tag}-*"):
            suffix = stale.name.rsplit("-", 1)[-1]
            if suffix.isdigit() and int(suffix) != os.getpid() and pid_alive(int(suffix)):
                continue
            shutil.rmtree(stale, ignore_errors=True)


def replace_store_dir(new: Path, final: Path) -> None:
    """Move the finished store ``new`` to ``final``.

    A previous store at ``final`` is renamed aside first and deleted only after the
    new one is in place, so a kill at any moment leaves a whole store at ``final``
    (the other one under a hidden name that :func:`remove_stale_temps` clears).
    Anything at ``final`` that is not a store or an empty directory is never touched.
    """
    old = None
    if final.exists():
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        elif is_store_dir(final):
            old = temp_store_path(final, "replaced")
            os.replace(final, old)
        else:
            raise StoreError(f"{final} exists and is not a diccae store; refusing to replace it")
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class FeatureStore:
    """A handle on one store directory.  Use :meth:`create` or :meth:`open`."""

    def __init__(self, group: zarr.Group, path: Path, read_only: bool):
        self._group = group
        self.path = path
        self.read_only = read_only
        self._cache: dict[str, np.ndarray] = {}
        self._checked: set[str] = set()

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        ids: Sequence[str],
        modalities: dict[str, ModalitySpec],
        labels: Sequence[int] | np.ndarray | None = None,
        splits: Sequence[str] | None = None,
        paths: Sequence[str] | None = None,
        class_names: Sequence[str] = (),
        chunk_rows: int = 1024,
        dtype: str = "float16",
        compression: str = "zstd",
        manifest_sha256: str = "",
        source: str = "extract",
        overwrite: bool = False,
        extra_attrs: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Lay out a new store with every row pending.

        Refuses to touch an existing directory unless ``overwrite`` is set, so an
        accidental rerun never destroys finished extraction work.
        """
        path = Path(path)
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if chunk_rows < 1:
            raise InputError(f"chunk_rows must be >= 1, got {chunk_rows}")
        compressors = _compressors(compression)
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise InputError(f"unknown modalities {sorted(unknown)}; expected {MODALITIES}")
        n = len(ids)
        # validate everything before touching the disk: a bad call leaves nothing behind
        ids_arr = _strings(ids, n, "id")
        paths_arr = _strings(paths, n, "path")
        splits_arr = _strings(splits, n, "split")
        if len(set(ids_arr.tolist())) != n:
            seen: set[str] = set()
            dup = next(i for i, v in enumerate(ids_arr) if v in seen or seen.add(v))
            raise InputError(f"duplicate clip id {ids_arr[dup]!r} at row {dup}")
        label_arr = np.full(n, -1, np.int32) if labels is None else np.asarray(labels, np.int32)
        if label_arr.shape != (n,):
            raise InputError(f"expected {n} labels, got {label_arr.shape}")
        if path.exists():
            if not overwrite:
                raise StoreError(f"{path} already exists (use --overwrite to start fresh)")
            if path.is_dir() and any(path.iterdir()) and not is_store_dir(path):
                raise StoreError(f"{path} exists and is not a diccae store; refusing to replace it")
            shutil.rmtree(path) if path.is_dir() else path.unlink()

        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        rows = chunk_rows  # kept as requested: a small store is one partial chunk
        row_dims = ("row",)
        for name, spec in modalities.items():
            group.create_array(
                name,
                shape=(n, spec.dim),
                chunks=(rows, spec.dim),
                dtype=dtype,
                fill_value=0,
                dimension_names=("row", f"{name}_dim"),
                compressors=compressors,
            )
            group.create_array(
                f"{name}_missing",
                shape=(n,),
                chunks=(rows,),
                dtype="bool",
                fill_value=False,
                dimension_names=row_dims,
            )
        group.create_array(
            "status",
            shape=(n,),
            chunks=(rows,),
            dtype="uint8",
            fill_value=STATUS_PENDING,
            dimension_names=row_dims,
        )
        group.create_array(
            "label",
            shape=(n,),
            chunks=(rows,),
            dtype="int32",
            fill_value=-1,
            dimension_names=row_dims,
        )
        for name, values in (
            ("ids", ids_arr),
            ("paths", paths_arr),
            ("split", splits_arr),
            ("error", _strings(None, n, "error")),
        ):
            group.create_array(
                name, shape=(n,), chunks=(rows,), dtype=str, fill_value="", dimension_names=row_dims
            )
            if n and name != "error":
                group[name][:] = values
        if n:
            group["label"][:] = label_arr

        store = cls(group, path, read_only=False)
        content = {
            "manifest_sha256": manifest_sha256,
            "n_rows": n,
            "modalities": {k: v.to_json() for k, v in sorted(modalities.items())},
            "ids_sha256": hashlib.sha256("\n".join(ids_arr.tolist()).encode()).hexdigest(),
            "dtype": dtype,
        }
        fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]
        group.attrs.update(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "diccae_version": diccae_version(),
                "source": source,
                "n_rows": n,
                "chunk_rows": rows,
                "dtype": dtype,
                "compression": compression,
                "class_names": [str(c) for c in class_names],
                "modalities": content["modalities"],
                "manifest_sha256": manifest_sha256,
                "fingerprint": fingerprint,
                **(extra_attrs or {}),
            }
        )
        group.create_group(integrity.LEDGER_GROUP)
        integrity.write_created(
            path, {a: group[a] for a in integrity.CREATION_ARRAYS}, len(store.shard_ranges())
        )
        store._reseal()
        return store

    # ---------------------------------------------------------------- integrity
    def _layouts(self) -> dict[str, dict[str, Any]]:
        return {name: integrity.array_layout(self._group[name]) for name in self.array_names()}

    def _reseal(self) -> None:
        """Record a digest of the attributes and array layouts (see featstore.store.integrity)."""
        self._group.attrs["integrity"] = integrity.seal(
            {k: v for k, v in self._group.attrs.items() if k != "integrity"}, self._layouts()
        )

    def open_problems(self) -> list[str]:
        """Structural damage found without reading data: missing or unreadable arrays,
        shapes that disagree with the attributes, attributes edited after writing."""
        problems: list[str] = []
        attrs = self.attrs
        try:
            n = int(attrs["n_rows"])
            chunk_rows = int(attrs["chunk_rows"])
            specs = self.modalities
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
        for entry in sorted(self.path.iterdir()) if self.path.is_dir() else []:
            # a folder without zarr.json is not a Zarr node (Zarr ignores it too)
            if (
                entry.name != integrity.LEDGER_GROUP
                and not entry.name.startswith(".")
                and (entry / "zarr.json").exists()
            ):
                names.add(entry.name)
        for name in sorted(names | set(required) | set(sealed)):
            checked = name in required or name in sealed  # other nodes are not ours to judge
            if not (self.path / name / "zarr.json").is_file():
                if name in required:
                    what = "folder" if not (self.path / name).is_dir() else "metadata file"
                    path = self.path / name if what == "folder" else self.path / name / "zarr.json"
                    problems.append(f"array {name!r} is missing ({what} {path} not found)")
                    unreadable.add(name)
                continue
            try:
                arr = self._group[name]
                if not isinstance(arr, zarr.Array):
                    if checked:
                        problems.append(f"{name!r} is not an array")
                    continue
                layouts[name] = integrity.array_layout(arr)
            except Exception as exc:  # noqa: BLE001 - a truncated zarr.json raises anything
                if checked:
                    problems.append(
                        f"array {name!r} metadata ({self.path / name / 'zarr.json'}) is unreadable "
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

    def fingerprint_problems(self) -> list[str]:
        """Recompute the fingerprint from the content it covers (reads the ids)."""
        content = {
            "manifest_sha256": self.attrs.get("manifest_sha256", ""),
            "n_rows": self.n_rows,
            "modalities": self.attrs["modalities"],
            "ids_sha256": hashlib.sha256(
                "\n".join(str(i) for i in self.ids.tolist()).encode()
            ).hexdigest(),
            "dtype": self.dtype,
        }
        fp = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]
        if fp != self.fingerprint:
            return [
                f"fingerprint {self.fingerprint} does not match the store's content (expected {fp})"
            ]
        return []

    def check_chunks(self, name: str) -> None:
        """Raise :class:`StoreDamaged` if a chunk of ``name`` is absent although written.

        One directory scan per array and handle; the rule per array is in
        featstore/store/integrity.py.
        """
        if name in self._checked:
            return
        arr = self.array(name)
        path = self.path
        ranges = self.shard_ranges()
        have = integrity.present_chunks(path, name, arr.ndim)
        sealed = isinstance(self._group.attrs.get("integrity"), dict)
        expected: dict[int, str] = {}
        if name in integrity.CREATION_ARRAYS and sealed:
            created = integrity.created_record(path) or {}
            for c, crc in enumerate(created.get(name, [0] * len(ranges))):
                if crc is not None:
                    expected[c] = "is missing although it was written when the store was created"
        elif name not in MODALITIES and name not in ROW_ARRAYS:
            recorded = integrity.extra_record(path, name)
            for c, crc in enumerate(recorded or []):
                if crc is not None:
                    expected[c] = "is missing although the array was written"
        else:
            recorded = integrity.recorded_chunks(path)
            missing_recorded = sorted(c for c in recorded if c not in have and c < len(ranges))
            for c in missing_recorded:
                rec = integrity.chunk_record(path, c) or {}
                if rec.get(name) is not None:
                    expected[c] = "is missing although its rows are done"
            if name in MODALITIES:  # also stores without a ledger: done rows need data
                unrecorded = [c for c in range(len(ranges)) if c not in have and c not in recorded]
                if unrecorded:
                    st = self.status()
                    miss = self.missing(name)
                    for c in unrecorded:
                        s, e = ranges[c]
                        if ((st[s:e] == STATUS_DONE) & ~miss[s:e]).any():
                            expected[c] = "is missing although its rows are done"
        for c in sorted(expected):
            if c not in have and c < len(ranges):
                raise integrity.damaged(path, name, c, *ranges[c], expected[c])
        self._checked.add(name)

    def find_damage(self, names: Iterable[str]) -> StoreDamaged | None:
        """The first damaged chunk of ``names`` as a StoreDamaged (not raised), or None.

        For readers that bypass :meth:`read` (``dask.array.from_zarr``): on a decoder
        error they call this to turn it into the one-line message naming the chunk.
        """
        for name in names:
            try:
                self.check_chunks(name)
                for s, e in self.shard_ranges():
                    self._get(name, slice(s, e))
            except StoreDamaged as exc:
                return exc
        return None

    def _get(self, name: str, sel: Any, arr: zarr.Array | None = None) -> np.ndarray:
        """Read ``arr[sel]`` (rows first); decoder failures become :class:`StoreDamaged`."""
        self.check_chunks(name)
        arr = self.array(name) if arr is None else arr
        try:
            if isinstance(sel, tuple) and sel and isinstance(sel[0], np.ndarray):
                return np.asarray(arr.get_orthogonal_selection(sel))
            return np.asarray(arr[sel])
        except DiccaeError:
            raise
        except Exception as exc:  # noqa: BLE001 - zstd, JSON, reshape ... all mean damage
            rows = sel[0] if isinstance(sel, tuple) else sel
            if isinstance(rows, slice):
                s, e, _ = rows.indices(self.n_rows)
            else:
                idx = np.asarray(rows)
                s, e = (int(idx.min()), int(idx.max()) + 1) if idx.size else (0, 0)
            c = self.chunk_rows
            for k in range(s // c, max(s // c + 1, -(-e // c))):
                ks, ke = k * c, min((k + 1) * c, self.n_rows)
                try:
                    np.asarray(arr[ks:ke])
                except Exception:  # noqa: BLE001
                    raise integrity.damaged(
                        self.path,
                        name,
                        k,
                        ks,
                        ke,
                        f"cannot be decoded ({type(exc).__name__}: {exc})",
                    ) from None
            raise StoreDamaged(
                f"{self.path}: array {name!r} cannot be read ({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> FeatureStore:
        """Open an existing store; ``mode`` is ``"r"`` (default) or ``"r+"``."""
        path = Path(path)
        if mode not in ("r", "r+"):
            raise InputError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} is not a diccae store (no zarr.json found)")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except Exception as exc:  # damaged metadata
            raise StoreDamaged(
                f"{path}: cannot open as a Zarr v3 group ({type(exc).__name__}: {exc})"
            ) from None
        if group.attrs.get("format") != FORMAT_NAME:
            raise StoreError(
                f"{path} is a Zarr group but not a diccae store (format attribute missing)"
            )
        version = group.attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{path}: store format version {version} is not supported (expected {FORMAT_VERSION})"
            )
        store = cls(group, path, read_only=(mode == "r"))
        problems = store.open_problems()
        if problems:
            more = (
                f" (and {len(problems) - 1} more; see `diccae store verify`)"
                if len(problems) > 1
                else ""
            )
            raise StoreDamaged(f"{path}: the store is damaged: {problems[0]}{more}")
        return store

    # ---------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    @property
    def n_rows(self) -> int:
        return int(self._group.attrs["n_rows"])

    def __len__(self) -> int:
        return self.n_rows

    @property
    def chunk_rows(self) -> int:
        return int(self._group.attrs["chunk_rows"])

    @property
    def dtype(self) -> str:
        return str(self._group.attrs["dtype"])

    @property
    def compression(self) -> str:
        return str(self._group.attrs.get("compression", "zstd"))

    @property
    def fingerprint(self) -> str:
        return str(self._group.attrs["fingerprint"])

    @property
    def class_names(self) -> list[str]:
        return list(self._group.attrs.get("class_names", []))

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {k: ModalitySpec.from_json(v) for k, v in self._group.attrs["modalities"].items()}

    def update_attrs(self, **values: Any) -> None:
        from featstore.common.lock import writer_lock

        self._require_writable()
        with writer_lock(self.path):
            self._group.attrs.update(values)
            self._reseal()

    def check_compatible(
        self,
        modalities: dict[str, ModalitySpec],
        *,
        manifest_sha256: str,
        dtype: str,
        chunk_rows: int | None = None,
        compression: str | None = None,
    ) -> None:
        """Raise :class:`StoreConfigMismatch` if continuing this store would mix configs."""
        problems = []
        mine = self.attrs["modalities"]
        theirs = {k: v.to_json() for k, v in modalities.items()}
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                problems.append(
                    f"{name} encoder: store has {mine.get(name)}, requested {theirs.get(name)}"
                )
        if self.attrs.get("manifest_sha256") != manifest_sha256:
            problems.append("the manifest differs from the one the store was made from")
        if self.dtype != dtype:
            problems.append(f"dtype: store has {self.dtype}, requested {dtype}")
        if chunk_rows is not None and self.chunk_rows != chunk_rows:
            problems.append(f"chunk_rows: store has {self.chunk_rows}, requested {chunk_rows}")
        if compression is not None and self.compression != compression:
            problems.append(f"compression: store has {self.compression}, requested {compression}")
        if problems:
            raise StoreConfigMismatch(
                f"{self.path} was made with a different configuration; refusing to continue it "
                "(use --overwrite to start fresh):\n  - " + "\n  - ".join(problems)
            )

    # -------------------------------------------------------------- row arrays
    def array(self, name: str) -> zarr.Array:
        """The raw zarr array ``name`` (for dask: ``dask.array.from_zarr(store.array(name))``)."""
        try:
            return self._group[name]
        except KeyError as exc:
            raise StoreError(
                f"{self.path} has no array {name!r} (has: {', '.join(self.array_names())})"
            ) from exc

    def array_names(self) -> list[str]:
        return sorted(self._group.array_keys())

    def _row_array(self, name: str) -> np.ndarray:
        """Whole small per-row arrays (ids, labels...), cached once read."""
        if name not in self._cache:
            self._cache[name] = self._get(name, slice(None))
        return self._cache[name]

    @property
    def ids(self) -> np.ndarray:
        return self._row_array("ids")

    @property
    def paths(self) -> np.ndarray:
        return self._row_array("paths")

    @property
    def labels(self) -> np.ndarray:
        return self._row_array("label")

    @property
    def splits(self) -> np.ndarray:
        return self._row_array("split")

    def status(self) -> np.ndarray:
        """Current status of every row (never cached: writers change it)."""
        return self._get("status", slice(None))

    def missing(self, modality: str) -> np.ndarray:
        name = f"{modality}_missing"
        if name not in self._group:
            return np.ones(self.n_rows, dtype=bool)
        return self._get(name, slice(None))

    def counts(self) -> dict[str, int]:
        st = self.status()
        return {STATUS_NAMES[k]: int((st == k).sum()) for k in STATUS_NAMES}

    def valid_rows(self, modalities: Iterable[str] = MODALITIES) -> np.ndarray:
        """Boolean mask: extraction done and every named modality present."""
        mask = self.status() == STATUS_DONE
        for m in modalities:
            mask &= ~self.missing(m)
            if m in self._group:
                self.check_chunks(m)  # readers of these rows (dask too) must not see zeros
        return mask

    def failures(self) -> list[Failure]:
        st = self.status()
        rows = np.flatnonzero(st == STATUS_FAILED)
        self.check_chunks("error")
        if rows.size == 0:
            return []
        err = self._get("error", slice(None))
        return [Failure(int(r), str(self.ids[r]), str(self.paths[r]), str(err[r])) for r in rows]

    # ------------------------------------------------------------------ shards
    def shard_ranges(self, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """Chunk-aligned ``(start, stop)`` row ranges covering ``[start, stop)``."""
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        c = self.chunk_rows
        out = []
        s = start
        while s < stop:
            e = min(stop, (s // c + 1) * c)
            out.append((s, e))
            s = e
        return out

    def iter_shards(
        self,
        arrays: Sequence[str] = MODALITIES,
        *,
        order: Sequence[int] | None = None,
    ) -> Iterator[Shard]:
        """Yield shards (one chunk of rows each) as NumPy arrays.

        ``order`` permutes the shard sequence (the trainer passes a shuffled order);
        reading whole chunks keeps each read a single decompression per array.
        """
        ranges = self.shard_ranges()
        if order is not None:
            ranges = [ranges[i] for i in order]
        zarrs = [self.array(a) for a in arrays]
        for s, e in ranges:
            yield Shard(
                s, e, {a: self._get(a, slice(s, e), z) for a, z in zip(arrays, zarrs, strict=True)}
            )

    def read(self, name: str, rows: slice | np.ndarray | Sequence[int]) -> np.ndarray:
        """Rows of array ``name``; ``rows`` is a slice or sorted/unsorted row indices."""
        arr = self.array(name)
        if isinstance(rows, slice):
            return self._get(name, rows, arr)
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
        order = np.argsort(idx, kind="stable")
        out = self._get(name, (idx[order],) + (slice(None),) * (arr.ndim - 1), arr)
        result = np.empty_like(out)
        result[order] = out
        return result

    # ----------------------------------------------------------------- writing
    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")

    def write_rows(
        self,
        start: int,
        *,
        embeddings: dict[str, np.ndarray],
        missing: dict[str, np.ndarray] | None = None,
        failed: dict[int, str] | None = None,
    ) -> None:
        """Write a contiguous block of rows and only then mark it finished.

        ``embeddings[m]`` has one row per clip in the block; ``missing[m]`` flags
        clips lacking that stream (their embedding rows are left as zeros and must
        not be read as data); ``failed`` maps absolute row -> reason for clips that
        could not be decoded at all.  Data first, status last: a kill in between
        leaves the rows pending and they are redone on resume.
        """
        self._require_writable()
        missing = missing or {}
        failed = failed or {}
        lengths = {v.shape[0] for v in (*embeddings.values(), *missing.values())}
        if not embeddings or len(lengths) != 1:
            raise InputError(
                f"write_rows needs at least one modality, all blocks of one length (got lengths {sorted(lengths)})"
            )
        (n,) = lengths
        if start < 0 or start + n > self.n_rows:
            raise InputError(
                f"rows [{start}, {start + n}) fall outside the store's {self.n_rows} rows"
            )
        outside = [r for r in failed if not start <= r < start + n]
        if outside:
            raise InputError(
                f"failed rows {outside[:5]} are outside the block [{start}, {start + n})"
            )
        # validated: now data first, status last
        for name, values in embeddings.items():
            self.array(name)[start : start + n] = values.astype(self.dtype, copy=False)
        for name, flags in missing.items():
            self.array(f"{name}_missing")[start : start + n] = flags
        status = np.full(n, STATUS_DONE, np.uint8)
        # the block's reasons are always rewritten, so a redone block never keeps a
        # reason from a killed earlier attempt
        err = np.full(n, "", dtype=object)
        for row, reason in failed.items():
            status[row - start] = STATUS_FAILED
            err[row - start] = reason
        self.array("error")[start : start + n] = err
        self.array("status")[start : start + n] = status
        # the ledger comes after the status: a record always means "these rows are done"
        written = [*embeddings, *(f"{m}_missing" for m in missing), "error", "status"]
        arrays = {a: self.array(a) for a in written}
        c = self.chunk_rows
        for chunk in range(start // c, -(-(start + n) // c)):
            integrity.write_chunk(self.path, chunk, arrays)
        self._checked.clear()

    def write_feature_array(
        self,
        name: str,
        data: np.ndarray,
        *,
        attrs: dict[str, Any] | None = None,
        dtype: str | None = None,
        overwrite: bool = True,
    ) -> zarr.Array:
        """Store an extra (N, D) feature array, e.g. fused features from a training run.

        Rows that have no value should be NaN; feature readers skip them.
        """
        from featstore.common.lock import writer_lock

        self._require_writable()
        with writer_lock(self.path):
            return self._write_feature_array(
                name, data, attrs=attrs, dtype=dtype, overwrite=overwrite
            )

    def _write_feature_array(
        self,
        name: str,
        data: np.ndarray,
        *,
        attrs: dict[str, Any] | None,
        dtype: str | None,
        overwrite: bool,
    ) -> zarr.Array:
        if name in ROW_ARRAYS or name in MODALITIES or name == integrity.LEDGER_GROUP:
            raise InputError(f"{name!r} is a reserved store array name")
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != self.n_rows:
            raise InputError(f"feature array {name!r} must be ({self.n_rows}, D), got {data.shape}")
        if name in self._group:
            if not overwrite:
                raise StoreError(f"{self.path} already has an array {name!r}")
            integrity.remove_extra(self.path, name)
            del self._group[name]
        arr = self._group.create_array(
            name,
            shape=data.shape,
            chunks=(self.chunk_rows, data.shape[1]),
            dtype=dtype or str(data.dtype),
            fill_value=np.nan,
            dimension_names=("row", f"{name}_dim"),
            compressors=_compressors(self.compression),
        )
        arr[:] = data
        arr.attrs.update(attrs or {})
        integrity.write_extra(self.path, name, arr, len(self.shard_ranges()))
        self._checked.discard(name)
        self._reseal()
        return arr

    def feature_arrays(self) -> list[str]:
        """Names of all 2-D per-row arrays (the modalities plus any written later)."""
        out = []
        for name in self.array_names():
            arr = self._group[name]
            if arr.ndim == 2 and arr.shape[0] == self.n_rows:
                out.append(name)
        return out

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # ---------------------------------------------------------------- analysis
    def to_pandas(self, columns: Sequence[str] | None = None, *, rows: Any = None) -> Any:
        """The per-row table as a pandas DataFrame, reading only ``columns`` (and ``rows``);
        see :func:`featstore.analysis.dataset.store_table`."""
        from featstore.analysis.dataset import store_table

        return store_table(self, columns, rows=rows)
