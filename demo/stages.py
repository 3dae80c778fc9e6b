"""The demo's stages, in the order of the paper; each adds its numbers to ``run.numbers``.

Every stage calls the same public function its ``diccae`` command calls, so the
demo exercises exactly what a user runs by hand.  A stage raises the library's
error unchanged; :func:`demo.pipeline.run_demo` stops there and keeps what finished.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo.settings import DemoRun
from featstore.errors import InputError


def rel_path(run: DemoRun, p: Path | str) -> str:
    """``p`` relative to the demo folder when inside it (how report.json names files)."""
    p = Path(p)
    try:
        return p.relative_to(run.out).as_posix()
    except ValueError:
        return p.as_posix()


def stage_generate(run: DemoRun) -> None:
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


def stage_extract(run: DemoRun) -> None:
    from featstore.extract import ExtractConfig, extract

    cfg = ExtractConfig(
        audio_encoder="kaldi-fbank",
        video_encoder="frame-stats",
        device=run.settings.device,
        workers=run.settings.workers,
        overwrite=True,
        chunk_rows=128,
    )
    summary = extract(run.manifest, run.store, cfg, progress=run.progress)
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


def stage_store_info(run: DemoRun) -> None:
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


def stage_cluster(run: DemoRun) -> None:
    from featstore.labels import cluster_store

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
    run: DemoRun, summary: dict[str, Any], d: Path, n_top: int = 3
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


def stage_confusion_raw(run: DemoRun) -> None:
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
            progress=run.progress,
        )
        out[features] = _confusion_summary(run, summary, d)
    run.numbers["confusion_raw"] = out


def stage_audit(run: DemoRun) -> None:
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


def _train_config(run: DemoRun, *, epochs: int, recluster_every: int = 0):
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
        progress=run.show_progress,
        plots=True,
        threads=1,  # the demo's MLP is tiny: a second thread only adds synchronisation (and contention)
    )


def _pretrain_config(run: DemoRun):
    s = run.settings
    return _train_config(run, epochs=s.pretrain_epochs, recluster_every=s.recluster_every)


def _finetune_config(run: DemoRun):
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


def stage_pretrain(run: DemoRun) -> None:
    """Sec. 2.3: train on the K-means labels, re-clustering the fused features."""
    from trainer.phases import pretrain

    summary = pretrain(
        run.store,
        labels_path=run.labels0,
        out_dir=run.pretrain_dir,
        config=_pretrain_config(run),
        progress=run.progress,
    )
    run.numbers["pretrain"] = {
        "epochs": summary.epochs,
        "label_rounds": [rel_path(run, p) for p in summary.label_rounds],
        "final": _epoch_rows(summary)[-1] if summary.metrics else {},
        "curve": _epoch_rows(summary),
    }
    rounds = [p for p in summary.label_rounds if Path(p).resolve() != run.labels0.resolve()]
    if rounds:  # how far the refined clusters moved, and whether they got closer to the truth
        from featstore.labels import read_label_file

        _, meta = read_label_file(rounds[-1])
        run.numbers["pretrain"]["last_round_agreement"] = meta.agreement
        run.numbers["pretrain"]["last_round_alignment"] = (meta.alignment or {}).get(
            "same_id_fraction"
        )


def stage_finetune(run: DemoRun) -> None:
    from trainer.phases import finetune

    summary = finetune(
        run.store,
        init_checkpoint=run.pretrain_dir / "checkpoint.pt",
        out_dir=run.finetune_dir,
        config=_finetune_config(run),
        progress=run.progress,
    )
    run.numbers["finetune"] = {
        "epochs": summary.epochs,
        "stop": summary.stop,
        "final": _epoch_rows(summary)[-1] if summary.metrics else {},
        "curve": _epoch_rows(summary),
    }


def stage_evaluate(run: DemoRun) -> None:
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
        "histogram": rel_path(run, r["histogram_png"]) if r.get("histogram_png") else None,
    }


def stage_confusion_fused(run: DemoRun) -> None:
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
    from trainer.evaluate import load_model
    from trainer.inference import infer
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
        progress=run.progress,
        compare=run.out / "confusion" / "raw-audio_video",
    )
    run.numbers["confusion_fused"] = _confusion_summary(run, summary, d)


def stage_ablate(run: DemoRun) -> None:
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


STAGES: list[tuple[str, Callable[[DemoRun], None]]] = [
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
