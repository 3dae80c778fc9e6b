"""Manifests: which clips to extract, with their ground-truth labels and splits.

Three layouts are read, all into the same :class:`Manifest`:

``csv``
    A header row naming at least ``path``; optional ``label``, ``split``, ``id``
    (and ``audio_path`` for a separate audio file).  Relative paths resolve against
    the manifest's folder, so a data set folder can be moved as a whole.
    ``label`` is a class name; empty, ``-1`` or ``unknown`` means "no label" (-1).
    When *every* given label is a non-negative integer below ``MAX_DENSE_LABEL`` (or
    the values are dense) the labels are taken as class indices (``class_names`` are
    then ``"0" .. str(max)``); larger sparse values are numbered 0..C-1 in order of
    value, so memory follows the class count, never the largest value.  Otherwise class
    names are sorted and numbered 0..C-1, so the numbering never depends on row order.
    ``split`` is normalised (``featstore.store.splits``: any case, ``validation`` -> ``val``);
    other names are refused unless passed in ``splits=`` (``extract --split NAME``).
    ``id`` defaults to the path as written in the manifest.

``cavmae`` (CAV-MAE dataset JSON)
    ``{"data": [{"video_id", "wav", "video_path", "labels"}, ...]}`` with the label
    CSV ``index,mid,display_name`` (``label_csv=``).  ``labels`` is a comma-separated
    list of AudioSet mids; diccae is single-label, so the **first** mid is the class
    (its ``index`` in the label CSV) -- multi-label clips keep their first label.  The
    audio comes from ``wav``.  ``video_path`` may be a media file, or -- as CAV-MAE's
    own preprocessing writes it -- a folder of frames: ``<video_path>/frame_<k>/
    <video_id>.jpg`` (k = 0..9), or image files directly in the folder; frames are
    then taken in that order.  Without a label CSV, the classes are the sorted
    distinct first mids.

``folder`` (UCF101 layout)
    ``ROOT/<class>/<clip>.<ext>``: one sub-folder per class (sorted names give the
    class indices, like torchvision's ImageFolder), clips found recursively in it.
    The id is the path relative to ROOT; the split is empty.

The manifest's ``sha256`` covers its content (the label CSV too; for a folder, the
sorted listing of relative paths), so a store can refuse to be continued from a
different manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featstore.errors import ManifestError
from featstore.store.splits import UnknownSplit, normalize_split

KINDS = ("auto", "csv", "cavmae", "folder")
#: files a class-folder manifest picks up (video containers and audio files)
MEDIA_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .flv .wmv .3gp .wav .mp3 .flac .ogg .opus .m4a .aac".split()
)
UNKNOWN_LABELS = frozenset({"", "-1", "unknown"})
#: numeric labels up to this value are used as class indices directly; beyond it (or
#: when they are sparse) they are numbered by value, so the class list -- and memory --
#: follows the number of classes, never the largest label value
MAX_DENSE_LABEL = 4096


@dataclass(frozen=True)
class ManifestEntry:
    """One clip: where its media is and what we know about it."""

    id: str
    path: Path  # video source (media file or frame folder); audio too unless audio_path
    label: int = -1  # class index, -1 unknown
    label_name: str = ""
    split: str = ""
    audio_path: Path | None = None  # separate audio file (CAV-MAE ``wav``)

    @property
    def display_path(self) -> str:
        """The path(s) recorded in the store and in failure reports."""
        if self.audio_path is not None and self.audio_path != self.path:
            return f"{self.path} + {self.audio_path}"
        return str(self.path)


@dataclass
class Manifest:
    source: Path
    kind: str
    entries: Sequence[ManifestEntry]  # a list, or only some rows (featstore.extract.dask)
    class_names: list[str]
    sha256: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    @property
    def splits(self) -> list[str]:
        return [e.split for e in self.entries]

    @property
    def paths(self) -> list[str]:
        return [e.display_path for e in self.entries]


def load_manifest(
    path: str | Path,
    *,
    label_csv: str | Path | None = None,
    kind: str = "auto",
    splits: tuple[str, ...] = (),
) -> Manifest:
    """Read a manifest of any supported layout (see the module docstring).

    Split values are normalised (featstore.store.splits); unknown ones are refused with the
    row named unless listed in ``splits``.
    """
    path = Path(path)
    if kind not in KINDS:
        raise ManifestError(f"unknown manifest kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    if kind == "auto":
        kind = (
            "folder" if path.is_dir() else ("cavmae" if path.suffix.lower() == ".json" else "csv")
        )
    if kind == "folder":
        manifest = _load_folder(path)
    elif kind == "cavmae":
        manifest = _load_cavmae(path, Path(label_csv) if label_csv else None, splits)
    else:
        manifest = _load_csv(path, splits)
    if not manifest.entries:
        raise ManifestError(f"{path}: the manifest lists no clips")
    _check_unique_ids(manifest)
    return manifest


def _check_unique_ids(m: Manifest) -> None:
    seen: dict[str, int] = {}
    for i, e in enumerate(m.entries):
        if e.id in seen:
            raise ManifestError(
                f"{m.source}: duplicate clip id {e.id!r} (entries {seen[e.id] + 1} and {i + 1})"
            )
        seen[e.id] = i


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc})") from exc


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _is_index(name: str) -> bool:
    return name.isascii() and name.isdigit()  # '²'.isdigit() is True but int('²') fails


def _number_classes(names: list[str]) -> tuple[list[str], dict[str, int], list[str]]:
    """Class names -> indices: numeric labels are indices (when dense and small enough),
    otherwise sorted names (numeric ones by value).  Also returns notes for the user."""
    given = sorted({n for n in names if n not in UNKNOWN_LABELS})
    if given and all(_is_index(n) for n in given):
        values = sorted({int(n) for n in given})
        top = values[-1]
        if top < max(MAX_DENSE_LABEL, 2 * len(values)):
            return [str(i) for i in range(top + 1)], {n: int(n) for n in given}, []
        number = {v: i for i, v in enumerate(values)}
        note = (
            f"numeric labels go up to {top} but only {len(values)} distinct values occur: classes are "
            f"numbered 0..{len(values) - 1} in order of value (class_names keep the original values)"
        )
        return [str(v) for v in values], {n: number[int(n)] for n in given}, [note]
    return given, {n: i for i, n in enumerate(given)}, []


def _split(path: Path, where: str, value: str, allowed: tuple[str, ...]) -> str:
    try:
        return normalize_split(value, allowed)
    except UnknownSplit as exc:
        raise ManifestError(f"{path}, {where}: {exc}") from None


# ---------------------------------------------------------------------- CSV
def _load_csv(path: Path, splits: tuple[str, ...] = ()) -> Manifest:
    text = _read_text(path)
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.reader(io.StringIO(text), dialect=dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(
            f"{path}: empty CSV manifest (expected a header row 'path,label[,split][,id]')"
        ) from None
    except csv.Error as exc:
        raise ManifestError(f"{path}, row 1: {_csv_problem(exc)}") from None
    header = [h.strip().lower() for h in header]
    if "path" not in header:
        raise ManifestError(
            f"{path}, row 1: header {header} has no 'path' column (expected 'path,label[,split][,id]')"
        )
    col = {
        name: header.index(name)
        for name in ("path", "label", "split", "id", "audio_path")
        if name in header
    }
    base = path.parent
    raw: list[tuple[int, dict[str, str]]] = []
    rows = enumerate(reader, start=2)
    while True:
        try:
            rowno, row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ManifestError(f"{path}, row {reader.line_num}: {_csv_problem(exc)}") from None
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ManifestError(
                f"{path}, row {rowno}: expected {len(header)} fields ({','.join(header)}), got {len(row)}"
            )
        values: dict[str, str] = {k: row[i].strip() for k, i in col.items()}
        if not values["path"]:
            raise ManifestError(f"{path}, row {rowno}: empty path")
        if "split" in values:
            values["split"] = _split(path, f"row {rowno}", values["split"], splits)
        raw.append((rowno, values))
    class_names, index, notes = _number_classes([v.get("label", "") for _, v in raw])
    entries = []
    for _rowno, v in raw:
        name = v.get("label", "")
        entries.append(
            ManifestEntry(
                id=v.get("id") or v["path"],
                path=_resolve(base, v["path"]),
                label=index.get(name, -1),
                label_name="" if name in UNKNOWN_LABELS else name,
                split=v.get("split", ""),
                audio_path=_resolve(base, v["audio_path"]) if v.get("audio_path") else None,
            )
        )
    sha = hashlib.sha256(text.encode()).hexdigest()
    return Manifest(path, "csv", entries, class_names, sha, notes)


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "new-line character seen in unquoted field" in text:
        return (
            "a bare carriage return (CR) inside an unquoted field; quote the field or remove the CR"
        )
    if "field larger than field limit" in text:
        return f"a field is longer than {csv.field_size_limit()} characters; not a valid manifest value"
    return f"malformed CSV ({text})"


# ------------------------------------------------------------------ CAV-MAE
def _read_label_csv(path: Path) -> tuple[list[str], dict[str, int], str]:
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if not {"index", "mid", "display_name"} <= set(header):
        raise ManifestError(
            f"{path}, row 1: label CSV header must be 'index,mid,display_name', got {header}"
        )
    ci, cm, cd = header.index("index"), header.index("mid"), header.index("display_name")
    names: dict[int, str] = {}
    mids: dict[str, int] = {}
    for rowno, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < len(header):
            raise ManifestError(
                f"{path}, row {rowno}: expected {len(header)} fields, got {len(row)}"
            )
        try:
            idx = int(row[ci])
        except ValueError:
            raise ManifestError(
                f"{path}, row {rowno}: index {row[ci]!r} is not an integer"
            ) from None
        if idx < 0 or idx in names:
            raise ManifestError(f"{path}, row {rowno}: index {idx} is negative or repeated")
        names[idx] = row[cd].strip()
        mids[row[cm].strip()] = idx
    if sorted(names) != list(range(len(names))):
        raise ManifestError(f"{path}: label indices must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))], mids, text


def _load_cavmae(path: Path, label_csv: Path | None, splits: tuple[str, ...] = ()) -> Manifest:
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ManifestError(f"{path}: expected a CAV-MAE dataset JSON object with a 'data' list")
    items = doc["data"]
    base = path.parent
    first_mids = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ManifestError(f"{path}, data[{i}]: expected an object, got {type(item).__name__}")
        if not item.get("video_path") and not item.get("wav"):
            raise ManifestError(f"{path}, data[{i}]: neither 'video_path' nor 'wav' is given")
        labels = str(item.get("labels", "") or "")
        first_mids.append(labels.split(",")[0].strip())

    notes = []
    sha = hashlib.sha256(text.encode())
    if label_csv is not None:
        if not label_csv.is_file():
            raise ManifestError(f"{label_csv}: label CSV not found")
        class_names, mid_index, label_text = _read_label_csv(label_csv)
        sha.update(b"\0" + label_text.encode())
    else:
        mids = sorted({m for m in first_mids if m})
        class_names, mid_index = mids, {m: i for i, m in enumerate(mids)}
        notes.append("no --label-csv given: classes are the sorted distinct first mids")

    entries = []
    for i, item in enumerate(items):
        mid = first_mids[i]
        if mid and mid not in mid_index:
            raise ManifestError(
                f"{path}, data[{i}]: label {mid!r} is not in the label CSV {label_csv}"
            )
        video = item.get("video_path")
        wav = item.get("wav")
        vid = str(item.get("video_id") or "").strip()
        video_path = _resolve(base, str(video)) if video else None
        audio_path = _resolve(base, str(wav)) if wav else None
        primary = video_path if video_path is not None else audio_path
        if primary is None:  # unreachable: one of them is given (checked above)
            raise ManifestError(f"{path}, data[{i}]: neither 'video_path' nor 'wav' is given")
        entries.append(
            ManifestEntry(
                id=vid or str(video or wav),
                path=primary,
                label=mid_index.get(mid, -1),
                label_name=class_names[mid_index[mid]] if mid else "",
                split=_split(path, f"data[{i}]", str(item.get("split", "") or ""), splits),
                audio_path=audio_path,
            )
        )
    return Manifest(path, "cavmae", entries, class_names, sha.hexdigest(), notes)


# ------------------------------------------------------------------- folder
def _load_folder(root: Path) -> Manifest:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ManifestError(f"{root}: no class sub-folders (expected ROOT/<class>/<clip>.<ext>)")
    entries = []
    for idx, name in enumerate(classes):
        for clip in sorted((root / name).rglob("*")):
            rel = clip.relative_to(root)
            if (
                clip.is_file()
                and clip.suffix.lower() in MEDIA_EXTENSIONS
                and not any(part.startswith(".") for part in rel.parts)
            ):
                entries.append(
                    ManifestEntry(id=rel.as_posix(), path=clip, label=idx, label_name=name)
                )
    listing = "\n".join(f"{e.id}" for e in entries)
    sha = hashlib.sha256(("folder\n" + listing).encode()).hexdigest()
    return Manifest(root, "folder", entries, classes, sha)
