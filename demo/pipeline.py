"""The whole DICCAE method on a generated data set: what ``diccae demo`` runs.

This is application glue, not library code: every stage calls the same public
function its CLI command calls (``extract``, ``store_info``, ``cluster_store``,
``run_confusion_analysis``, ``pretrain``, ``finetune``, ``evaluate``, ``ablate``), so
the demo exercises exactly what a user runs by hand, in the order of the paper:

1. generate clips (:mod:`demo.data`): classes that look alike but sound
   different and classes that sound alike but look different;
2. extract embeddings with the weightless encoders into a store;
3. summarise the store;
4. K-means pseudo-labels on audio+video (Section 2.3), scored against the truth;
5. confusion degree (Eq. 2) of the raw features per modality and combined;
6. self-supervised pretraining on the cluster labels with re-clustering;
7. supervised finetuning;  8. evaluation on the test split;
9. a small ablation (with and without the confusion loss, Table 2's first row),
   over several seeds, with a linear probe beside every head;
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

from rich.console import Console
from rich.markup import escape

from featstore.errors import InputError

MARKER = "report.json"
#: written first, so a demo interrupted before its report is still recognised as ours
STARTED = ".diccae-demo"
OWNED = ("data", "store.zarr", "labels", "confusion", "runs", "ablation", "report.md", MARKER)


@dataclass
class DemoSettings:
    """Sizes and schedule of a demo run.

    Training uses ``diccae train``'s defaults (auto epochs from a step budget,
    warm-up + cosine, early stopping, best checkpoint) with a smaller step budget
    (``min_steps``) and a small model, so the whole demo with its ablation seeds
    stays within a few minutes on 2 CPU cores.
    """

    n_clips: int = 480
    n_classes: int = 8
    seed: int = 0
    duration: float = 1.5
    size: int = 64
    fps: float = 12.0
    k: int | None = None  # clusters for the pseudo-labels; None = number of classes
    n_init: int = 20  # K-means restarts (paper: 20)
    pretrain_epochs: int = 0  # 0 = auto (step budget)
    recluster_every: int = -1  # -1 = auto: a third of the run (paper: every 10 of 30 epochs)
    finetune_epochs: int = 0  # 0 = auto (step budget)
    min_steps: int = 400  # optimiser steps per phase that the auto epoch count guarantees
    ablation_variants: tuple[str, ...] = (
        "no_confusion_loss",
    )  # besides the full model (trainer.ablate.VARIANTS)
    ablation_seeds: int = 3  # seeds per ablation variant (mean ± sd, paired interval to full)
    batch_size: int = 128
    lr: float = 1e-3
    widths: int = 128  # hidden width of the small demo model
    ablate: bool = True
    device: str = "auto"
    workers: int = 2  # decode processes during extraction

    @classmethod
    def quick(cls) -> DemoSettings:
        """A much smaller run for smoke tests and CI (about a minute on 2 cores)."""
        return cls(
            n_clips=64,
            n_classes=4,
            duration=1.0,
            size=32,
            fps=16.0,
            n_init=3,
            min_steps=150,
            widths=64,
            workers=1,
            ablation_seeds=2,
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

    @property
    def eval_dir(self) -> Path:
        return self.out / "runs" / "eval"


def _prepare_out(out: Path) -> None:
    """Use ``out`` for a fresh run; only ever delete what an earlier demo wrote there."""
    if out.exists() and any(out.iterdir()):
        ours = any((out / name).exists() for name in (STARTED, MARKER, "data/demo_classes.json"))
        if not ours:
            raise InputError(
                f"{out} exists and is not a diccae demo directory; choose another --out"
            )
        for name in OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / STARTED).write_text(
        "written by `diccae demo`; a rerun may replace what the demo wrote here\n"
    )


# ------------------------------------------------------------------------ stages
def stage_generate(run: _Run) -> None:
    from demo.data import load_demo_design, make_demo_dataset

    s = run.settings
    make_demo_dataset(
        run.data_dir,
        n_clips=s.n_clips,
        n_classes=s.n_classes,
        seed=s.seed,
        duration=s.duration,
        size=s.size,
        fps=s.fps,
        progress=run.progress,
    )
    design = load_demo_design(run.data_dir)
    run.numbers["data"] = {
        "n_clips": s.n_clips,
        "classes": design.class_names,
        "look_alike": [
            [design.class_names[i], design.class_names[j]] for i, j in design.look_alike
        ],
        "sound_alike": [
            [design.class_names[i], design.class_names[j]] for i, j in design.sound_alike
        ],
    }


def stage_extract(run: _Run) -> None:
    from featstore.extract.pipeline import ExtractConfig, extract

    cfg = ExtractConfig(
        audio_encoder="kaldi-fbank",
        video_encoder="frame-stats",
        device=run.settings.device,
        workers=run.settings.workers,
        overwrite=True,
        progress=run.progress,
        chunk_rows=128,
    )
    summary = extract(run.manifest, run.store, cfg)
    run.numbers["extract"] = {
        "n_done": int(summary.n_done),
        "n_failed": int(summary.n_failed),
        "seconds": float(summary.seconds),
        "clips_per_s": float(summary.clips_per_s),
    }
    if summary.n_failed:
        raise InputError(
            f"{summary.n_failed} generated clips failed to extract: {summary.failures[:3]}"
        )


def stage_store_info(run: _Run) -> None:
    from featstore.store.info import store_info

    info = store_info(run.store)
    run.numbers["store"] = {
        "n_rows": info["n_rows"],
        "status": info["status"],
        "dims": {m: v["dim"] for m, v in info["modalities"].items()},
        "encoders": {m: v["encoder"] for m, v in info["modalities"].items()},
        "bytes_on_disk": info["bytes_on_disk"],
        "splits": info.get("splits", {}),
        # label value -> class name (the manifest numbers sorted names, not the design order)
        "class_names": [
            c["name"] for c in sorted(info["classes"], key=lambda c: c["label"]) if c["label"] >= 0
        ],
    }


def stage_cluster(run: _Run) -> None:
    from featstore.labels.files import cluster_store

    s = run.settings
    result = cluster_store(
        run.store,
        out=run.labels0,
        k=s.n_clusters,
        n_init=s.n_init,
        seed=s.seed,
        features="audio+video",
        round=0,
        progress=run.progress,
    )
    agreement = result.agreement or {}
    run.numbers["cluster"] = {
        "k": int(result.meta.k),
        "inertia": float(result.meta.inertia),
        "backend": str(result.meta.backend),
        **{key: float(agreement[key]) for key in ("nmi", "ari", "purity") if key in agreement},
    }


def _confusion_summary(
    run: _Run, summary: dict[str, Any], d: Path, n_top: int = 3
) -> dict[str, Any]:
    """The parts of a ``run_confusion_analysis`` result the report shows."""
    stats = summary["stats"]
    return {
        "mean": stats["mean"],
        "var": stats["var"],
        "n_pairs": stats["n_pairs"],
        "fraction_overlapping": stats["fraction_overlapping"],
        "rows_used": stats.get("rows_used"),
        "dir": d.relative_to(run.out).as_posix(),
        "top_pairs": [
            {k: p[k] for k in ("name_i", "name_j", "M_ij", "r_i", "r_j", "d_ij")}
            for p in summary["top_pairs"][:n_top]
        ],
    }


def stage_confusion_raw(run: _Run) -> None:
    """Eq. 2 on the stored embeddings with the true classes (test split): the baseline.

    Per modality, the most confused pairs should be the ones the data was designed
    to confuse (look-alike pairs for video, sound-alike pairs for audio).
    """
    from featstore.confusion import run_confusion_analysis

    out = {}
    for features in ("audio", "video", "audio+video"):
        d = run.out / "confusion" / f"raw-{features.replace('+', '_')}"
        summary = run_confusion_analysis(
            run.store,
            ground_truth=True,
            out_dir=d,
            features=features,
            split="test",
            top=10,
            progress=False,
        )
        out[features] = _confusion_summary(run, summary, d)
    run.numbers["confusion_raw"] = out


def stage_audit(run: _Run) -> None:
    """Per-clip audit (what ``diccae audit`` runs) with the true classes.

    Clips of a designed look-alike or sound-alike pair are where audio and video
    should disagree, so ``modality_disagreement`` should land on those pairs.
    """
    from featstore.analysis import audit_store

    doc = audit_store(run.store, out_dir=run.out / "audit", ground_truth=True)
    run.numbers["audit"] = {
        "json": str(run.out / "audit" / "audit.json"),
        "flags": doc.get("flags"),
    }


def _train_config(run: _Run, *, epochs: int, recluster_every: int = 0):
    from trainer.config import ModelConfig, TrainConfig

    s = run.settings
    w = s.widths
    return TrainConfig(
        model=ModelConfig(
            encoder_widths=(w,),
            encoded_dim=w,
            projection_dim=w // 2,
            fusion_widths=(w,),
            fused_dim=w,
        ),
        epochs=epochs,
        min_steps=s.min_steps,
        batch_size=s.batch_size,
        lr=s.lr,
        recluster_every=recluster_every,
        recluster_n_init=s.n_init,
        seed=s.seed,
        device=s.device,
        progress=run.progress,
        plots=True,
        threads=1,  # the demo's MLP is tiny: a second thread only adds synchronisation (and contention)
    )


def _pretrain_config(run: _Run):
    s = run.settings
    return _train_config(run, epochs=s.pretrain_epochs, recluster_every=s.recluster_every)


def _finetune_config(run: _Run):
    return _train_config(run, epochs=run.settings.finetune_epochs)


def _epoch_rows(summary: Any) -> list[dict[str, Any]]:
    keep = (
        "epoch",
        "label_round",
        "loss_total",
        "loss_confusion",
        "top1_audio",
        "top1_video",
        "top1_av",
        "confusion_mean",
        "confusion_var",
        "seconds",
    )
    return [{k: r[k] for k in keep if k in r} for r in summary.metrics]


def stage_pretrain(run: _Run) -> None:
    """Sec. 2.3: train on the K-means labels, re-clustering the fused features."""
    from trainer.engine import pretrain

    summary = pretrain(
        run.store, labels_path=run.labels0, out_dir=run.pretrain_dir, config=_pretrain_config(run)
    )
    run.numbers["pretrain"] = {
        "epochs": summary.epochs,
        "label_rounds": [_rel(run, p) for p in summary.label_rounds],
        "final": _epoch_rows(summary)[-1] if summary.metrics else {},
        "curve": _epoch_rows(summary),
    }
    rounds = [p for p in summary.label_rounds if Path(p).resolve() != run.labels0.resolve()]
    if rounds:  # how far the refined clusters moved, and whether they got closer to the truth
        from featstore.labels.files import read_label_file

        _, meta = read_label_file(rounds[-1])
        run.numbers["pretrain"]["last_round_agreement"] = meta.agreement
        run.numbers["pretrain"]["last_round_alignment"] = (meta.alignment or {}).get(
            "same_id_fraction"
        )


def stage_finetune(run: _Run) -> None:
    from trainer.engine import finetune

    summary = finetune(
        run.store,
        init_checkpoint=run.pretrain_dir / "checkpoint.pt",
        out_dir=run.finetune_dir,
        config=_finetune_config(run),
    )
    run.numbers["finetune"] = {
        "epochs": summary.epochs,
        "stop": summary.stop,
        "final": _epoch_rows(summary)[-1] if summary.metrics else {},
        "curve": _epoch_rows(summary),
    }


def stage_evaluate(run: _Run) -> None:
    """Table 1 for the demo: top-1 of the audio, video and fused heads on the test split."""
    from trainer.evaluate import evaluate

    r = evaluate(
        run.finetune_dir, run.store, split="test", out_dir=run.eval_dir, device=run.settings.device
    )
    run.numbers["eval"] = {
        "n_rows": r["n_rows"],
        "top1_audio": r["top1_audio"],
        "top1_video": r["top1_video"],
        "top1_av": r["top1_av"],
        **{f"probe_{h}": r.get(f"probe_{h}") for h in ("audio", "video", "av")},
        "probe_n_train": r.get("probe_n_train"),
        "checkpoint": r["checkpoint"],
        "confusion_input": {k: r["confusion_input"][k] for k in ("mean", "var")}
        if "confusion_input" in r
        else None,
        "confusion_fused": {k: r["confusion_fused"][k] for k in ("mean", "var")},
        "per_class_top1_av": r.get("per_class_top1_av"),
        "histogram": _rel(run, r["histogram_png"]) if r.get("histogram_png") else None,
    }


def stage_confusion_fused(run: _Run) -> None:
    """Fig. 2 for the demo: M of the learned fused features against the raw embeddings.

    The fine-tuned model's (best checkpoint's) fused features of every clip are
    written beside the store into ``runs/finetune/fused`` (the store is only
    read), then analysed exactly like the raw features (same split, same true
    classes, ``--features runs/finetune/fused``), with the raw audio+video
    analysis overlaid.
    """
    from featstore.common.backend import resolve_device
    from featstore.confusion import run_confusion_analysis
    from featstore.store.core import FeatureStore
    from trainer.data import StoreSource
    from trainer.engine import infer
    from trainer.evaluate import load_model
    from trainer.run_io import write_fused_features

    device = resolve_device(run.settings.device)
    store = FeatureStore.open(run.store)
    model, state = load_model(run.finetune_dir, device, checkpoint="best")
    valid = store.valid_rows(("audio", "video"))
    res = infer(model, StoreSource(store), valid, device=device)
    path = write_fused_features(
        store,
        res,
        run.finetune_dir,
        attrs={
            "run_dir": str(run.finetune_dir),
            "phase": "finetune",
            "epoch": int(state.get("epoch", 0)),
        },
    )
    d = run.out / "confusion" / "fused"
    summary = run_confusion_analysis(
        store,
        ground_truth=True,
        out_dir=d,
        features=str(path),
        split="test",
        top=10,
        progress=False,
        compare=run.out / "confusion" / "raw-audio_video",
    )
    run.numbers["confusion_fused"] = _confusion_summary(run, summary, d)


def stage_ablate(run: _Run) -> None:
    """Table 2's first row on the demo: the same two phases without the confusion loss.

    The full model's row is the main run above: ``ablation/full`` links to ``runs``
    and ``ablate`` reuses a variant whose evaluation exists, so it is not trained twice.
    """
    from trainer.ablate import ablate, seed_dir

    out = run.out / "ablation"
    seeds = run.settings.ablation_seeds
    full = seed_dir(out, "full", 0, seeds)
    full.parent.mkdir(parents=True, exist_ok=True)
    if not full.exists():
        full.symlink_to(
            Path("../..") / "runs" if seeds > 1 else Path("..") / "runs", target_is_directory=True
        )
    result = ablate(
        run.store,
        out_dir=out,
        config=_pretrain_config(run),
        finetune_config=_finetune_config(run),
        labels_path=run.labels0,
        variants=["full", *run.settings.ablation_variants],
        eval_split="test",
        seeds=seeds,
    )
    run.numbers["ablation"] = {
        name: {k: v for k, v in r.items() if k != "title"} | {"title": r["title"]}
        for name, r in result["results"].items()
    }
    run.numbers["ablation_seeds"] = seeds
    run.numbers["ablation_per_seed"] = result["per_seed"]
    run.numbers["ablation_markdown"] = result["markdown"]


STAGES: list[tuple[str, Callable[[_Run], None]]] = [
    ("generate clips", stage_generate),
    ("extract embeddings", stage_extract),
    ("store info", stage_store_info),
    ("cluster (pseudo-labels)", stage_cluster),
    ("confusion of raw features", stage_confusion_raw),
    ("audit (per clip)", stage_audit),
    ("pretrain on clusters", stage_pretrain),
    ("finetune on labels", stage_finetune),
    ("evaluate", stage_evaluate),
    ("confusion of fused features", stage_confusion_fused),
    ("ablation", stage_ablate),
]


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
    settings = (settings or (DemoSettings.quick() if quick else DemoSettings())).with_overrides(
        **overrides
    )
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
        f"{s.n_clips} generated clips, {s.n_classes} classes, seed {s.seed}, device {s.device}; "
        f"wall time {n['seconds']['total']:.0f} s. The same numbers for programs: `report.json`. "
        "Every stage called the function its `diccae` command calls; rerun any of them by hand "
        "on `store.zarr` to explore.",
        "",
    ]
    lines += _report_headline(run)
    for part in (
        _report_data,
        _report_extract,
        _report_cluster,
        _report_confusion_raw,
        _report_audit,
        _report_training,
        _report_eval,
        _report_fused,
        _report_ablation,
    ):
        lines += part(run)
    lines += ["## Time per stage", "", "| Stage | Seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in n["seconds"].items()]
    lines.append("")
    path = run.out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _report_headline(run: _Run) -> list[str]:
    e = run.numbers["eval"]
    before = run.numbers["confusion_raw"]["audio+video"]
    after = run.numbers["confusion_fused"]
    c = e["checkpoint"]
    return [
        "## Headline",
        "",
        "| | audio | video | audio-visual |",
        "|---|---:|---:|---:|",
        f"| DICCAE top-1 on the test split ({e['n_rows']} clips) | {_pct(e['top1_audio'])} | {_pct(e['top1_video'])} "
        f"| {_pct(e['top1_av'])} |",
        f"| linear probe on the same inputs (logistic regression, {e.get('probe_n_train')} training rows) "
        f"| {_pct(e.get('probe_audio'))} | {_pct(e.get('probe_video'))} | {_pct(e.get('probe_av'))} |",
        f"| trained − probe (points) | {_signed_pct(_gap(e, 'audio'))} | {_signed_pct(_gap(e, 'video'))} "
        f"| {_signed_pct(_gap(e, 'av'))} |",
        "",
        f"Scored the {c['which']} checkpoint (epoch {c['epoch']} of {c['last_epoch']}; the run stopped: "
        f"{c.get('stop_reason')}).",
        "",
        "| confusion degree M (test split, true classes) | mean | variance |",
        "|---|---:|---:|",
        f"| raw audio+video embeddings | {_fmt(before['mean'])} | {_fmt(before['var'])} |",
        f"| fused features after DICCAE training | {_fmt(after['mean'])} | {_fmt(after['var'])} |",
        "",
    ]


def _report_data(run: _Run) -> list[str]:
    d = run.numbers["data"]
    out = [
        "## Data",
        "",
        "Generated MP4 clips (H.264 + AAC) under `data/clips`, manifest `data/manifest.csv`. "
        "Classes (look + sound):",
        "",
    ]
    out += [f"- `{c}`" for c in d["classes"]]
    out += ["", "Designed ambiguities: one modality alone cannot separate these pairs.", ""]
    out += [f"- look alike, sound different: `{a}` / `{b}`" for a, b in d["look_alike"]]
    out += [f"- sound alike, look different: `{a}` / `{b}`" for a, b in d["sound_alike"]]
    return [*out, ""]


def _report_extract(run: _Run) -> list[str]:
    e, st = run.numbers["extract"], run.numbers["store"]
    dims = ", ".join(f"{m}: `{st['encoders'][m]}` ({st['dims'][m]}-d)" for m in st["dims"])
    splits = ", ".join(f"{k} {v}" for k, v in sorted(st.get("splits", {}).items()))
    return [
        "## Extraction and store",
        "",
        f"{e['n_done']} clips extracted, {e['n_failed']} failed, in {e['seconds']:.1f} s "
        f"({e['clips_per_s']:.1f} clips/s). Encoders {dims}. Store `store.zarr`: "
        f"{st['bytes_on_disk'] / 1e6:.2f} MB on disk; splits: {splits}.",
        "",
    ]


def _report_cluster(run: _Run) -> list[str]:
    c = run.numbers["cluster"]
    agree = ", ".join(
        f"{k.upper() if k != 'purity' else k} {c[k]:.3f}"
        for k in ("nmi", "ari", "purity")
        if k in c
    )
    return [
        "## Pseudo-labels (Sec. 2.3: K-means on audio+video)",
        "",
        f"K = {c['k']}, {run.settings.n_init} restarts, best inertia {c['inertia']:.4g} (backend {c['backend']}). "
        f"Agreement with the true classes, which K-means never saw: {agree or 'not computed'}. "
        "Label file `labels/round0.npy`; cluster sizes in `labels/round0.png`.",
        "",
    ]


def _pair(p: dict[str, Any]) -> str:
    return f"`{p['name_i']}` / `{p['name_j']}` ({p['M_ij']:.2f})"


def _report_confusion_raw(run: _Run) -> list[str]:
    raw = run.numbers["confusion_raw"]
    out = [
        "## Confusion degree of the raw embeddings (Eq. 2, true classes, test split)",
        "",
        "The most confused pairs of each modality should be the pairs the data set makes "
        "ambiguous in that modality.",
        "",
        "| Features | mean M | var M | pairs overlapping | most confused pairs (M) |",
        "|---|---:|---:|---:|---|",
    ]
    for feat, r in raw.items():
        pairs = "; ".join(_pair(p) for p in r["top_pairs"][:2]) or "–"
        out.append(
            f"| {feat} | {_fmt(r['mean'])} | {_fmt(r['var'])} | {_pct(r['fraction_overlapping'])} | {pairs} |"
        )
    out += [
        "",
        "Per-feature heatmaps, PCA circles and top pairs: "
        + ", ".join(f"`{r['dir']}/`" for r in raw.values()),
        "",
    ]
    out += [
        f"![audio PCA circles]({raw['audio']['dir']}/circles.png)",
        "",
        f"![video PCA circles]({raw['video']['dir']}/circles.png)",
        "",
    ]
    return out


def _report_audit(run: _Run) -> list[str]:
    from featstore.analysis import audit_summary_markdown

    d = run.numbers["data"]
    designed = [tuple(p) for p in d["look_alike"]] + [tuple(p) for p in d["sound_alike"]]
    text = audit_summary_markdown(
        run.numbers["audit"]["json"],
        designed_pairs=designed,
        heading="## Per-clip audit (`diccae audit`, true classes)",
    )
    return [
        text,
        "Per clip: `audit/audit.csv`; ranked review: `audit/review.md`; "
        "flags per class: `audit/flags_per_class.png`.",
        "",
    ]


def _report_training(run: _Run) -> list[str]:
    pre, fine = run.numbers["pretrain"], run.numbers["finetune"]
    pf, ff = pre["final"], fine["final"]
    out = [
        "## Training",
        "",
        f"Pretraining on the cluster labels: {pre['epochs']} epochs, label rounds "
        + ", ".join(f"`{p}`" for p in pre["label_rounds"])
        + f". Last epoch: loss {_fmt(pf.get('loss_total'))}, top-1 against the cluster labels "
        f"(audio / video / fused) {_pct(pf.get('top1_audio'))} / {_pct(pf.get('top1_video'))} / {_pct(pf.get('top1_av'))}.",
    ]
    agr = pre.get("last_round_agreement")
    if agr:
        out.append(
            f"The refined clusters of the last round agree with the true classes with NMI {agr['nmi']:.3f}, "
            f"ARI {agr['ari']:.3f} (round 0: NMI {run.numbers['cluster'].get('nmi', float('nan')):.3f})."
        )
    out += [
        "",
        f"Finetuning on the true labels: {fine['epochs']} epochs; last epoch on the validation rows: top-1 "
        f"{_pct(ff.get('top1_audio'))} / {_pct(ff.get('top1_video'))} / {_pct(ff.get('top1_av'))}, "
        f"confusion mean {_fmt(ff.get('confusion_mean'))} (update set).",
        "",
        "![pretraining curves](runs/pretrain/training_curves.png)",
        "",
        "![finetuning curves](runs/finetune/training_curves.png)",
        "",
    ]
    return out


def _report_eval(run: _Run) -> list[str]:
    e = run.numbers["eval"]
    names = run.numbers["store"]["class_names"]
    out = [
        "## Evaluation (Table 1 analogue, test split)",
        "",
        f"top-1 audio {_pct(e['top1_audio'])}, video {_pct(e['top1_video'])}, audio-visual {_pct(e['top1_av'])}.",
        "",
    ]
    per = e.get("per_class_top1_av") or []
    if per:
        out += ["| class | audio-visual top-1 |", "|---|---:|"]
        out += [f"| `{names[i] if i < len(names) else i}` | {_pct(v)} |" for i, v in enumerate(per)]
        out.append("")
    if e.get("histogram"):
        out += [f"![confusion of the inputs vs the fused features]({e['histogram']})", ""]
    return out


def _report_fused(run: _Run) -> list[str]:
    raw = run.numbers["confusion_raw"]["audio+video"]
    f = run.numbers["confusion_fused"]
    top = "; ".join(_pair(p) for p in f["top_pairs"][:3]) or "–"
    return [
        "## Confusion degree before and after (Fig. 2 analogue)",
        "",
        f"Raw audio+video embeddings: mean {_fmt(raw['mean'])}, variance {_fmt(raw['var'])}, "
        f"{_pct(raw['fraction_overlapping'])} of class pairs overlapping. "
        f"Fused features of the fine-tuned model: mean {_fmt(f['mean'])}, variance {_fmt(f['var'])}, "
        f"{_pct(f['fraction_overlapping'])} overlapping. Most confused pairs after training: {top}.",
        "",
        f"![confusion distribution before and after]({f['dir']}/histogram.png)",
        "",
        f"![most confused classes after training]({f['dir']}/heatmap.png)",
        "",
    ]


def _report_ablation(run: _Run) -> list[str]:
    ab = run.numbers.get("ablation")
    if not ab:
        return []
    n = run.numbers.get("ablation_seeds", 1)
    out = [
        f"## Ablation (Table 2 analogue, test split, {n} seeds)",
        "",
        run.numbers["ablation_markdown"],
    ]
    verdicts = []
    for name, r in ab.items():
        if name == "full":
            continue
        d = r["delta_top1_av"]
        if d.get("within_noise") is None:
            verdicts.append(f"{r['title']}: one seed, no interval")
        else:
            verdicts.append(
                f"{r['title']}: audio-visual {100 * d['mean']:+.1f} points "
                f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] — "
                + ("within noise" if d["within_noise"] else "outside the noise")
            )
    out += [
        "",
        *[f"- {v}" for v in verdicts],
        "",
        f"The full model's seed {run.settings.seed} is the main run above (it links to `runs/`). One test clip "
        f"moves top-1 by {100 / max(1, run.numbers['eval']['n_rows']):.1f} points; the interval is a paired "
        f"t interval over the {n} seeds.",
        "",
    ]
    return out


def _gap(e: dict[str, Any], head: str) -> float | None:
    p = e.get(f"probe_{head}")
    return None if p is None else e[f"top1_{head}"] - p


def _signed_pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):+.1f}"


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
    e = n.get("eval", {})
    for key, label in (
        ("top1_audio", "top-1 audio"),
        ("top1_video", "top-1 video"),
        ("top1_av", "top-1 audio-visual"),
    ):
        if e.get(key) is not None:
            table.add_row(label, _pct(e[key]))
    raw, fused = n.get("confusion_raw", {}).get("audio+video"), n.get("confusion_fused")
    if raw and fused:
        table.add_row(
            "confusion mean raw -> fused", f"{_fmt(raw['mean'])} -> {_fmt(fused['mean'])}"
        )
        table.add_row("confusion var raw -> fused", f"{_fmt(raw['var'])} -> {_fmt(fused['var'])}")
    if e.get("probe_av") is not None:
        table.add_row(
            "probe A / V / A-V",
            " / ".join(_pct(e.get(f"probe_{h}")) for h in ("audio", "video", "av")),
        )
    for name, r in n.get("ablation", {}).items():
        if name != "full":
            from trainer.ablate import format_delta

            table.add_row(f"{r['title']}: Δ top-1 A-V", format_delta(r["delta_top1_av"]))
    table.add_row("wall time", f"{report.total_seconds:.0f} s")
    console.print(table)
    console.print(f"report: [bold]{escape(str(report.report_path))}[/]")
