"""``diccae map``: a 2-D scatter of the store, coloured by class or by audit flag.

Large stores are subsampled *evenly per class* (up to ``max_points // classes`` rows
of each, drawn with ``seed``) so small classes stay visible; only the sampled rows
are read.  PCA (centred SVD of the sample) is the default; UMAP is used only when
``umap-learn`` is installed, otherwise the command says so instead of falling back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featstore.analysis.audit import FLAGS
from featstore.analysis.dataset import as_store
from featstore.common.fileio import atomic_write_path
from featstore.errors import BackendUnavailable, InputError
from featstore.store.core import MODALITIES, FeatureStore
from featstore.store.features import COMBINED, assemble_block, feature_view

#: flag colouring: a point takes the first of its flags in this order
FLAG_ORDER = ("likely_mislabeled", "modality_disagreement", "outlier", "ambiguous")
FLAG_COLOURS = {
    "likely_mislabeled": "tab:red",
    "modality_disagreement": "tab:orange",
    "outlier": "tab:purple",
    "ambiguous": "tab:green",
}


@dataclass
class MapConfig:
    method: str = "pca"  # pca | umap
    features: str = COMBINED
    color_by: str = "class"  # class | flag
    max_points: int = 20_000
    seed: int = 0
    max_legend: int = 20

    def check(self) -> None:
        if self.method not in ("pca", "umap"):
            raise InputError(f"--method must be pca or umap, got {self.method!r}")
        if self.color_by not in ("class", "flag"):
            raise InputError(f"--color-by must be class or flag, got {self.color_by!r}")
        if self.max_points < 2:
            raise InputError(f"--max-points must be >= 2, got {self.max_points}")


def even_sample(
    groups: np.ndarray, candidates: np.ndarray, max_points: int, seed: int
) -> np.ndarray:
    """Sorted rows of ``candidates``: at most ``max_points // n_groups`` per group."""
    rng = np.random.default_rng(seed)
    g = groups[candidates]
    values = np.unique(g)
    quota = max(1, max_points // max(len(values), 1))
    out = []
    for v in values:
        rows = candidates[g == v]
        out.append(rows if rows.size <= quota else rng.choice(rows, quota, replace=False))
    return np.sort(np.concatenate(out)) if out else np.empty(0, np.int64)


def read_rows(
    store: FeatureStore, features: str, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The feature view at ``rows`` (sorted), exactly as every stage assembles it."""
    parts = list(MODALITIES) if features == COMBINED else [features]
    raw = [store.read(p, rows) for p in parts]
    kept, x = assemble_block(
        raw,
        np.arange(rows.size),
        0,
        combined=features == COMBINED,
        extra=parts[0] not in MODALITIES,
        what=f"{features} of {store.path}",
    )
    return rows[kept], x


def embed_2d(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise BackendUnavailable(
                "--method umap needs umap-learn, which is not installed (pip install umap-learn); "
                "use --method pca"
            ) from exc
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), {}
    xc = x.astype(np.float64) - x.mean(axis=0)
    _u, s, vt = np.linalg.svd(xc, full_matrices=False)
    total = float((s**2).sum())
    evr = float((s[:2] ** 2).sum() / total) if total > 0 else None
    xy = xc @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((xy.shape[0], 2 - xy.shape[1]))])
    return xy, {"explained_variance_ratio": evr}


def load_flags(audit_dir: str | Path, store: FeatureStore) -> np.ndarray:
    """(N, len(FLAGS)) booleans from a ``diccae audit`` output folder of this store."""
    folder = Path(audit_dir)
    meta, table = folder / "audit.json", folder / "audit.csv"
    if not meta.is_file() or not table.is_file():
        raise InputError(
            f"--audit {folder}: no audit.json/audit.csv there (is it a `diccae audit` output folder?)"
        )
    try:
        doc = json.loads(meta.read_text())
    except ValueError as exc:
        raise InputError(f"{meta}: not valid JSON: {exc}") from exc
    if doc.get("store_fingerprint") != store.fingerprint:
        raise InputError(
            f"--audit {folder}: made from another store (fingerprint differs from {store.path})"
        )
    import csv

    out = np.zeros((store.n_rows, len(FLAGS)), bool)
    with open(table, newline="") as f:
        reader = csv.reader(f)
        head = next(reader)
        try:
            cols = [head.index(k) for k in FLAGS]
            row_col = head.index("row")
        except ValueError as exc:
            raise InputError(f"{table}: missing column ({exc})") from exc
        for line_no, rec in enumerate(reader, start=2):
            try:
                r = int(rec[row_col])
                out[r] = [rec[c] == "1" for c in cols]
            except (ValueError, IndexError) as exc:
                raise InputError(f"{table}: line {line_no} is garbled ({exc})") from exc
    return out


def plot_map(
    store: FeatureStore | str | Path,
    out: str | Path,
    *,
    labels_path: str | Path | None = None,
    audit_dir: str | Path | None = None,
    config: MapConfig | None = None,
) -> dict[str, Any]:
    """Write the scatter to ``out`` (PNG) and its summary to ``out`` with ``.json``."""
    cfg = config or MapConfig()
    cfg.check()
    store = as_store(store)
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out must name a .png file, got {out}")
    if labels_path is not None:
        from featstore.labels.files import read_label_file

        labels = read_label_file(labels_path, store)[0].astype(np.int64)
        names = {int(v): f"cluster {v}" for v in np.unique(labels)}
        source = str(labels_path)
    else:
        labels = np.asarray(store.labels, np.int64)
        table = list(store.class_names)
        names = {
            int(v): table[v] if 0 <= v < len(table) else f"class {v}" for v in np.unique(labels)
        }
        source = "ground-truth" if (labels >= 0).any() else "none"
    names[-1] = "unlabelled"
    flags = None
    if cfg.color_by == "flag":
        if audit_dir is None:
            raise InputError(
                "--color-by flag needs --audit DIR (the output folder of `diccae audit`)"
            )
        flags = load_flags(audit_dir, store)
    valid = np.flatnonzero(feature_view(store, cfg.features).valid_mask())
    if valid.size < 2:
        raise InputError(f"{store.path}: fewer than 2 usable rows for {cfg.features!r}")
    rows = even_sample(labels, valid, cfg.max_points, cfg.seed)
    rows, x = read_rows(store, cfg.features, rows)
    xy, info = embed_2d(x, cfg.method, cfg.seed)
    groups = _groups(labels[rows], flags[rows] if flags is not None else None, names, cfg)
    _scatter(
        xy,
        groups,
        out,
        f"{store.path.name}: {cfg.features}, {cfg.method.upper()}, "
        f"{rows.size:,} of {valid.size:,} clips",
    )
    doc = {
        "store": str(store.path),
        "store_fingerprint": store.fingerprint,
        "labels": source,
        "config": asdict(cfg),
        "points": int(rows.size),
        "usable_rows": int(valid.size),
        "groups": {name: int(m.sum()) for name, m in groups},
        **info,
        "png": str(out),
    }
    atomic_write_path(out.with_suffix(".json"), lambda p: p.write_text(json.dumps(doc, indent=1)))
    return doc


def _groups(
    labels: np.ndarray, flags: np.ndarray | None, names: dict[int, str], cfg: MapConfig
) -> list[tuple[str, np.ndarray]]:
    if flags is not None:
        first = np.full(labels.size, -1)
        for k in reversed(range(len(FLAG_ORDER))):
            first[flags[:, FLAGS.index(FLAG_ORDER[k])]] = k
        out = [("no flag", first < 0)]
        return out + [(FLAG_ORDER[k], first == k) for k in range(len(FLAG_ORDER))]
    values, counts = np.unique(labels, return_counts=True)
    shown = values[np.argsort(-counts, kind="stable")][: cfg.max_legend]
    out = [(names[int(v)], labels == v) for v in sorted(shown.tolist())]
    rest = ~np.isin(labels, shown)
    if rest.any():
        out.append((f"{np.unique(labels[rest]).size} other classes", rest))
    return out


def _scatter(xy: np.ndarray, groups: list[tuple[str, np.ndarray]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7))
    size = max(2.0, min(20.0, 20000 / max(len(xy), 1)))
    cmap = plt.get_cmap("tab20")
    for i, (name, m) in enumerate(groups):
        if not m.any():
            continue
        grey = name in ("no flag", "unlabelled") or name.endswith("other classes")
        ax.scatter(
            xy[m, 0],
            xy[m, 1],
            s=size,
            alpha=0.35 if grey else 0.8,
            linewidths=0,
            color="0.75" if grey else FLAG_COLOURS.get(name, cmap(i % 20)),
            label=f"{name} ({int(m.sum())})",
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2 if len(groups) > 10 else 1)
    fig.tight_layout()
    try:
        atomic_write_path(out, lambda p: fig.savefig(p, dpi=120))
    finally:
        plt.close(fig)
