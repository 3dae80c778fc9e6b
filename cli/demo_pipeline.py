"""The whole DICCAE method on a generated data set: what ``diccae demo`` runs.

This is application glue, not library code: every stage calls the same public
function its CLI command calls (``extract``, ``store_info``, ``cluster_store``,
``run_confusion_analysis``, ``pretrain``, ``finetune``, ``evaluate``, ``ablate``), so
the demo exercises exactly what a user runs by hand, in the order of the paper:

1. generate clips (:mod:`featstore.demo_data`): classes that look alike but sound
   different and classes that sound alike but look different;
2. extract embeddings with the weightless encoders into a store;
3. summarise the store;
4. K-means pseudo-labels on audio+video (Section 2.3), scored against the truth;
5. confusion degree (Eq. 2) of the raw features per modality and combined;
6. self-supervised pretraining on the cluster labels with re-clustering;
7. supervised finetuning;  8. evaluation on the test split;
9. a small ablation (with and without the confusion loss, Table 2's first row);
10. confusion degree of the learned fused features, overlaid on step 5 (Fig. 2).

Everything lands under one directory with ``report.md`` (numbers + pictures) and
``report.json`` (the same numbers for programs).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from featstore.errors import InputError

MARKER = "report.json"
OWNED = ("data", "store.zarr", "labels", "confusion", "runs", "eval", "ablation", "figures", "report.md", MARKER)


@dataclass
class DemoSettings:
    """Sizes and schedule of a demo run.

    The defaults finish in well under 10 minutes on 2 CPU cores.  The learning rate
    is higher than the paper's 1e-4 because the demo trains for a few dozen epochs on
    a few hundred clips instead of hundreds of thousands of steps.
    """

    n_clips: int = 480
    n_classes: int = 8
    seed: int = 0
    duration: float = 1.5
    size: int = 64
    fps: float = 12.0
    k: int | None = None  # clusters for the pseudo-labels; None = number of classes
    n_init: int = 20  # K-means restarts (paper: 20)
    pretrain_epochs: int = 20
    recluster_every: int = 10  # paper: every 10 epochs
    finetune_epochs: int = 20
    ablation_epochs: int | None = None  # finetune epochs of each ablation variant; None = finetune_epochs
    batch_size: int = 32
    lr: float = 1e-3
    widths: int = 128  # hidden width of the small demo model
    ablate: bool = True
    device: str = "auto"
    workers: int = 2  # decode processes during extraction

    @classmethod
    def quick(cls) -> DemoSettings:
        """A much smaller run for smoke tests and CI (about a minute on 2 cores)."""
        return cls(
            n_clips=64, n_classes=4, duration=1.0, size=32, fps=8.0, n_init=3, pretrain_epochs=4,
            recluster_every=2, finetune_epochs=6, ablation_epochs=4, widths=64, workers=1,
        )

    def with_overrides(self, **values: Any) -> DemoSettings:
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown demo settings {sorted(unknown)}")
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @property
    def n_clusters(self) -> int:
        return self.k or self.n_classes


@dataclass
class DemoReport:
    """Where the demo wrote its results and the headline numbers."""

    out_dir: Path
    report_path: Path
    numbers: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0


@dataclass
class _Run:
    out: Path
    settings: DemoSettings
    console: Console
    progress: bool
    numbers: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)

    # paths every stage agrees on
    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def manifest(self) -> Path:
        return self.data_dir / "manifest.csv"

    @property
    def store(self) -> Path:
        return self.out / "store.zarr"

    @property
    def labels0(self) -> Path:
        return self.out / "labels" / "round0.npy"

    @property
    def pretrain_dir(self) -> Path:
        return self.out / "runs" / "pretrain"

    @property
    def finetune_dir(self) -> Path:
        return self.out / "runs" / "finetune"


def _prepare_out(out: Path) -> None:
    """Use ``out`` for a fresh run; only ever delete what an earlier demo wrote there."""
    if out.exists() and any(out.iterdir()):
        ours = (out / MARKER).exists() or (out / "data" / "demo_classes.json").exists()
        if not ours:
            raise InputError(f"{out} exists and is not a diccae demo directory; choose another --out")
        for name in OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------ stages
def stage_generate(run: _Run) -> None:
    from featstore.demo_data import load_demo_design, make_demo_dataset

    s = run.settings
    make_demo_dataset(
        run.data_dir, n_clips=s.n_clips, n_classes=s.n_classes, seed=s.seed, duration=s.duration,
        size=s.size, fps=s.fps, progress=run.progress,
    )
    design = load_demo_design(run.data_dir)
    run.numbers["data"] = {
        "n_clips": s.n_clips,
        "classes": design.class_names,
        "look_alike": [[design.class_names[i], design.class_names[j]] for i, j in design.look_alike],
        "sound_alike": [[design.class_names[i], design.class_names[j]] for i, j in design.sound_alike],
    }


def stage_extract(run: _Run) -> None:
    from featstore.extract import ExtractConfig, extract

    cfg = ExtractConfig(
        audio_encoder="kaldi-fbank", video_encoder="frame-stats", device=run.settings.device,
        workers=run.settings.workers, overwrite=True, progress=run.progress, chunk_rows=128,
    )
    summary = extract(run.manifest, run.store, cfg)
    run.numbers["extract"] = {
        "n_done": int(summary.n_done),
        "n_failed": int(summary.n_failed),
        "seconds": float(summary.seconds),
        "clips_per_s": float(summary.clips_per_s),
    }
    if summary.n_failed:
        raise InputError(f"{summary.n_failed} generated clips failed to extract: {summary.failures[:3]}")


def stage_store_info(run: _Run) -> None:
    from featstore.info import store_info

    info = store_info(run.store)
    run.numbers["store"] = {
        "n_rows": info["n_rows"],
        "status": info["status"],
        "dims": {m: v["dim"] for m, v in info["modalities"].items()},
        "encoders": {m: v["encoder"] for m, v in info["modalities"].items()},
        "bytes_on_disk": info["bytes_on_disk"],
        "splits": info.get("splits", {}),
    }


def stage_cluster(run: _Run) -> None:
    from featstore.labels import cluster_store

    s = run.settings
    result = cluster_store(
        run.store, out=run.labels0, k=s.n_clusters, n_init=s.n_init, seed=s.seed,
        features="audio+video", round=0, progress=run.progress,
    )
    agreement = result.agreement or {}
    run.numbers["cluster"] = {
        "k": int(result.meta.k),
        "inertia": float(result.meta.inertia),
        "backend": str(result.meta.backend),
        **{key: float(agreement[key]) for key in ("nmi", "ari", "purity") if key in agreement},
    }


def _confusion_stats(summary: dict[str, Any]) -> dict[str, Any]:
    stats = summary.get("stats", summary)
    return {key: stats[key] for key in ("mean", "var", "n_classes", "rows") if key in stats}


def stage_confusion_raw(run: _Run) -> None:
    """Eq. 2 on the stored embeddings with the true classes (test split): the baseline."""
    from featstore.confusion import run_confusion_analysis

    out = {}
    for features in ("audio", "video", "audio+video"):
        d = run.out / "confusion" / f"raw-{features.replace('+', '_')}"
        summary = run_confusion_analysis(run.store, ground_truth=True, out_dir=d, features=features, split="test")
        out[features] = {**_confusion_stats(summary), "dir": str(d.relative_to(run.out)), "top_pairs": _top_pairs(d)}
    run.numbers["confusion_raw"] = out


def _top_pairs(d: Path, n: int = 3) -> list[dict[str, Any]]:
    import csv

    path = d / "top_pairs.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [dict(r) for _, r in zip(range(n), csv.DictReader(f))]


def _train_config(run: _Run, *, epochs: int, recluster_every: int = 0, **loss: Any):
    from trainer.config import LossConfig, ModelConfig, TrainConfig

    s = run.settings
    return TrainConfig(
        model=ModelConfig(encoder_widths=(s.widths,), encoded_dim=s.widths, projection_dim=s.widths // 2,
                          fusion_widths=(s.widths,), fused_dim=s.widths),
        loss=LossConfig(**loss),
        epochs=epochs, batch_size=s.batch_size, lr=s.lr, recluster_every=recluster_every,
        recluster_n_init=s.n_init, seed=s.seed, device=s.device, progress=run.progress,
    )


def stage_pretrain(run: _Run) -> None:
    from trainer import pretrain

    s = run.settings
    cfg = _train_config(run, epochs=s.pretrain_epochs, recluster_every=s.recluster_every)
    summary = pretrain(run.store, labels_path=run.labels0, out_dir=run.pretrain_dir, config=cfg)
    run.numbers["pretrain"] = _run_summary(summary)


def stage_finetune(run: _Run) -> None:
    from trainer import finetune

    s = run.settings
    cfg = _train_config(run, epochs=s.finetune_epochs)
    summary = finetune(run.store, init_checkpoint=run.pretrain_dir, out_dir=run.finetune_dir, config=cfg)
    run.numbers["finetune"] = _run_summary(summary)


def _run_summary(summary: Any) -> dict[str, Any]:
    if hasattr(summary, "to_json"):
        d = summary.to_json()
    elif hasattr(summary, "__dataclass_fields__"):
        d = asdict(summary)
    else:
        d = dict(summary)
    return json.loads(json.dumps(d, default=str))


def stage_evaluate(run: _Run) -> None:
    from trainer import evaluate

    result = evaluate(run.finetune_dir, run.store, split="test", out_dir=run.out / "eval")
    run.numbers["eval"] = json.loads(json.dumps(result, default=str))


def stage_ablate(run: _Run) -> None:
    from trainer import ablate

    s = run.settings
    cfg = _train_config(run, epochs=s.ablation_epochs or s.finetune_epochs)
    result = ablate(run.store, out_dir=run.out / "ablation", config=cfg, variants=("full", "no_confusion_loss"))
    run.numbers["ablation"] = json.loads(json.dumps(result, default=str))


def stage_confusion_fused(run: _Run) -> None:
    """Fig. 2 for the demo: the distribution of M before (raw) and after (fused)."""
    raise NotImplementedError  # filled in once the trainer's fused-feature output is known


def stage_figures(run: _Run) -> None:
    run.figures["training_curves"] = plot_training_curves(
        {"pretrain": run.pretrain_dir, "finetune": run.finetune_dir}, run.out / "figures" / "training_curves.png"
    )


STAGES: list[tuple[str, Callable[[_Run], None]]] = [
    ("generate clips", stage_generate),
    ("extract embeddings", stage_extract),
    ("store info", stage_store_info),
    ("cluster (pseudo-labels)", stage_cluster),
    ("confusion of raw features", stage_confusion_raw),
    ("pretrain on clusters", stage_pretrain),
    ("finetune on labels", stage_finetune),
    ("evaluate", stage_evaluate),
    ("ablation", stage_ablate),
    ("confusion of fused features", stage_confusion_fused),
    ("figures", stage_figures),
]


# ----------------------------------------------------------------------- figures
def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curves(runs: dict[str, Path], path: Path) -> Path:
    """Losses, top-1 and confusion mean per epoch for each run, one row per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(runs), 3, figsize=(14, 3.6 * len(runs)), squeeze=False)
    for row, (name, run_dir) in enumerate(runs.items()):
        records = _read_metrics(run_dir)
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
        groups = {
            "loss": [k for k in (records[0] if records else {}) if "loss" in k],
            "top-1": [k for k in (records[0] if records else {}) if "top1" in k],
            "confusion": [k for k in (records[0] if records else {}) if k.startswith("confusion_")],
        }
        for col, (title, keys) in enumerate(groups.items()):
            ax = axes[row][col]
            for key in keys:
                ys = [r.get(key) for r in records]
                if any(isinstance(y, (int, float)) for y in ys):
                    ax.plot(epochs, [np.nan if y is None else y for y in ys], label=key, marker=".")
            ax.set_title(f"{name}: {title}")
            ax.set_xlabel("epoch")
            if ax.lines:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- run it
def run_demo(
    out_dir: str | Path,
    *,
    settings: DemoSettings | None = None,
    quick: bool = False,
    console: Console | None = None,
    progress: bool = True,
    **overrides: Any,
) -> DemoReport:
    """Run every stage into ``out_dir`` and write ``report.md``/``report.json`` there.

    ``overrides`` are :class:`DemoSettings` fields (``n_clips=``, ``seed=``,
    ``pretrain_epochs=`` ...).  Stages stop at the first error, which propagates as
    the library raised it (the CLI maps it to an exit code); whatever finished is
    kept in ``out_dir``.
    """
    settings = (settings or (DemoSettings.quick() if quick else DemoSettings())).with_overrides(**overrides)
    out = Path(out_dir)
    _prepare_out(out)
    console = console or Console()
    run = _Run(out, settings, console, progress)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    for i, (name, fn) in enumerate(STAGES, 1):
        console.rule(f"[bold]demo {i}/{len(STAGES)}: {name}")
        t0 = time.perf_counter()
        fn(run)
        seconds[name] = time.perf_counter() - t0
        console.print(f"[dim]{name}: {seconds[name]:.1f} s[/]")
    total = time.perf_counter() - t_all
    run.numbers["seconds"] = {**seconds, "total": total}
    run.numbers["settings"] = asdict(settings)
    (out / MARKER).write_text(json.dumps(run.numbers, indent=2, default=str))
    report_path = write_report(run)
    return DemoReport(out, report_path, run.numbers, seconds, total)


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return "–" if x is None else str(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def _rel(run: _Run, p: Path | str) -> str:
    p = Path(p)
    try:
        return p.relative_to(run.out).as_posix()
    except ValueError:
        return p.as_posix()


def write_report(run: _Run) -> Path:
    """report.md: every number the demo measured, with the pictures it refers to."""
    n = run.numbers
    s = run.settings
    lines = [
        "# DICCAE demo report",
        "",
        f"{s.n_clips} generated clips, {s.n_classes} classes, seed {s.seed}; "
        f"total {n['seconds']['total']:.0f} s. Numbers for programs: `report.json`.",
        "",
    ]
    lines += _report_data(run) + _report_extract(run) + _report_cluster(run) + _report_confusion_raw(run)
    lines += _report_training(run) + _report_eval(run) + _report_ablation(run) + _report_fused(run)
    lines += ["## Time per stage", "", "| Stage | Seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in n["seconds"].items()]
    lines.append("")
    path = run.out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _report_data(run: _Run) -> list[str]:
    d = run.numbers["data"]
    out = ["## Data", "", "Classes (look + sound):", ""]
    out += [f"- `{c}`" for c in d["classes"]]
    out += ["", "Designed ambiguities — a single modality cannot separate these pairs:", ""]
    out += [f"- look alike, sound different: `{a}` vs `{b}`" for a, b in d["look_alike"]]
    out += [f"- sound alike, look different: `{a}` vs `{b}`" for a, b in d["sound_alike"]]
    return [*out, ""]


def _report_extract(run: _Run) -> list[str]:
    e, st = run.numbers["extract"], run.numbers["store"]
    dims = ", ".join(f"{m} {st['encoders'][m]} ({st['dims'][m]}-d)" for m in st["dims"])
    return [
        "## Extraction and store",
        "",
        f"{e['n_done']} clips extracted ({e['n_failed']} failed) in {e['seconds']:.1f} s "
        f"({e['clips_per_s']:.1f} clips/s); encoders: {dims}; store `store.zarr`, "
        f"{st['bytes_on_disk'] / 1e6:.2f} MB on disk; splits {st.get('splits', {})}.",
        "",
    ]


def _report_cluster(run: _Run) -> list[str]:
    c = run.numbers["cluster"]
    agree = ", ".join(f"{k.upper()} {c[k]:.3f}" for k in ("nmi", "ari", "purity") if k in c)
    return [
        "## Pseudo-labels (K-means on audio+video)",
        "",
        f"K = {c['k']}, {run.settings.n_init} restarts, best inertia {c['inertia']:.4g} "
        f"(backend {c['backend']}); agreement with the true classes: {agree or 'not computed'}. "
        "Label file: `labels/round0.npy`.",
        "",
    ]


def _report_confusion_raw(run: _Run) -> list[str]:
    raw = run.numbers["confusion_raw"]
    out = [
        "## Confusion degree of the raw embeddings (Eq. 2, true classes, test split)",
        "",
        "| Features | mean M | var M | most confused pair | M |",
        "|---|---:|---:|---|---:|",
    ]
    for feat, r in raw.items():
        top = r["top_pairs"][0] if r["top_pairs"] else {}
        pair = f"`{top.get('name_i', top.get('class_i', ''))}` / `{top.get('name_j', top.get('class_j', ''))}`" if top else "–"
        out.append(f"| {feat} | {_fmt(r.get('mean'))} | {_fmt(r.get('var'))} | {pair} | {_fmt(_num(top.get('M')))} |")
    out += ["", "Heatmaps and PCA circles: " + ", ".join(f"`{r['dir']}/heatmap.png`" for r in raw.values()), ""]
    av = raw.get("audio+video", {})
    if av:
        out += [f"![raw audio+video heatmap]({av['dir']}/heatmap.png)", ""]
    return out


def _num(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _report_training(run: _Run) -> list[str]:
    out = ["## Training", ""]
    if "training_curves" in run.figures:
        out += [f"![training curves]({_rel(run, run.figures['training_curves'])})", ""]
    return out


def _report_eval(run: _Run) -> list[str]:
    return ["## Evaluation (test split)", "", "```json", json.dumps(run.numbers.get("eval", {}), indent=1)[:2000], "```", ""]


def _report_ablation(run: _Run) -> list[str]:
    return ["## Ablation", "", "```json", json.dumps(run.numbers.get("ablation", {}), indent=1)[:2000], "```", ""]


def _report_fused(run: _Run) -> list[str]:
    return []


def print_summary(report: DemoReport, console: Console) -> None:
    """A few lines for the terminal; the report has the rest."""
    from rich.table import Table

    n = report.numbers
    table = Table(title="DICCAE demo", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    c = n.get("cluster", {})
    if "nmi" in c:
        table.add_row("cluster/true-class NMI", f"{c['nmi']:.3f}")
    for key, label in (("audio", "top-1 audio"), ("video", "top-1 video"), ("av", "top-1 audio-visual")):
        v = n.get("headline", {}).get(key)
        if v is not None:
            table.add_row(label, _pct(v))
    table.add_row("wall time", f"{report.total_seconds:.0f} s")
    console.print(table)
    console.print(f"report: [bold]{report.report_path}[/]")
