"""``diccae ablate``: the paper's Table 2 and Figure 3 on your own store.

Each variant is a full pretrain -> finetune -> eval with the same seeds, so the
only difference between rows is the switched-off component:

=====================  =========================================================
variant                what changes (both phases unless stated)
=====================  =========================================================
full                   nothing: DICCAE as described
no_confusion_loss      lambda_cl = 0 (w/o L_CL)
static_weight          constant pair weight instead of M-hat (w/o M_ij)
no_infonce             lambda_nce = 0 (w/o L_InfoNCE)
no_recluster           pretrain keeps the round-0 labels (w/o Refinement)
no_cluster_guided      pretrain with InfoNCE only, no pseudo-labels (w/o K-means)
=====================  =========================================================

``sweep_static_weights`` adds one static-weight run per value and draws
accuracy against the weight with the dynamic (full) result as a line (Fig. 3).
Finished variants (an ``eval.json`` present) are reused, so an interrupted
ablation continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from featstore.errors import InputError
from trainer.config import TrainConfig
from trainer.engine import finetune, pretrain
from trainer.evaluate import evaluate
from trainer.run_io import atomic_write_bytes, atomic_write_json

Tweak = Callable[[TrainConfig, TrainConfig], None]


def _both(**values: Any) -> Tweak:
    def apply(pre: TrainConfig, fine: TrainConfig) -> None:
        for cfg in (pre, fine):
            for key, value in values.items():
                setattr(cfg.loss, key, value)

    return apply


def _pre(**values: Any) -> Tweak:
    def apply(pre: TrainConfig, fine: TrainConfig) -> None:
        for key, value in values.items():
            target = pre.loss if hasattr(pre.loss, key) else pre
            setattr(target, key, value)

    return apply


VARIANTS: dict[str, tuple[str, Tweak]] = {
    "full": ("DICCAE", lambda pre, fine: None),
    "no_confusion_loss": ("w/o L_CL", _both(lambda_cl=0.0)),
    "static_weight": ("w/o M_ij (static weight)", _both(weighting="static")),
    "no_infonce": ("w/o L_InfoNCE", _both(lambda_nce=0.0)),
    "no_recluster": ("w/o refinement", _pre(recluster_every=0)),
    "no_cluster_guided": ("w/o K-means (InfoNCE-only pretrain)", _pre(infonce_only=True)),
}


def _copy(cfg: TrainConfig) -> TrainConfig:
    return TrainConfig.from_dict(cfg.to_dict())


def run_variant(store_path, *, out_dir: Path, labels_path, pre: TrainConfig, fine: TrainConfig,
                eval_split: str) -> dict[str, Any]:
    done = out_dir / "eval" / "eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    pre_dir, fine_dir = out_dir / "pretrain", out_dir / "finetune"
    resume_pre = (pre_dir / "checkpoint.pt").is_file()
    pretrain(store_path, labels_path=labels_path, out_dir=pre_dir, config=pre, resume=resume_pre)
    resume_fine = (fine_dir / "checkpoint.pt").is_file()
    finetune(store_path, init_checkpoint=pre_dir / "checkpoint.pt", out_dir=fine_dir, config=fine, resume=resume_fine)
    return evaluate(fine_dir, store_path, split=eval_split, out_dir=out_dir / "eval", device=fine.device,
                    plot=fine.plots)


def ablate(store_path, *, out_dir: str | Path, config: TrainConfig, labels_path: str | Path,
           finetune_config: TrainConfig | None = None, variants: Sequence[str] | None = None,
           sweep_static_weights: Sequence[float] | None = None, eval_split: str = "test",
           on_variant: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the ablations; writes ``ablation.json``, ``ablation.md`` and (with a sweep) ``static_weight_sweep.png``."""
    out_dir = Path(out_dir)
    names = list(variants) if variants else list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise InputError(f"unknown ablation variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if "full" not in names:
        names.insert(0, "full")  # deltas are against the full model
    fine_base = finetune_config or config
    results: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[str, str, TrainConfig, TrainConfig]] = []
    for name in names:
        pre, fine = _copy(config), _copy(fine_base)
        VARIANTS[name][1](pre, fine)
        jobs.append((name, VARIANTS[name][0], pre, fine))
    for w in sweep_static_weights or []:
        pre, fine = _copy(config), _copy(fine_base)
        _both(weighting="static", static_weight=float(w))(pre, fine)
        jobs.append((f"static_w{w:g}", f"static weight {w:g}", pre, fine))
    for name, title, pre, fine in jobs:
        r = run_variant(store_path, out_dir=out_dir / name, labels_path=labels_path, pre=pre, fine=fine,
                        eval_split=eval_split)
        results[name] = {"title": title, **{k: r.get(k) for k in ("top1_audio", "top1_video", "top1_av")},
                         "confusion_mean": r["confusion_fused"]["mean"], "confusion_var": r["confusion_fused"]["var"]}
        if on_variant:
            on_variant(name, results[name])
    full = results["full"]
    for r in results.values():
        for key in ("top1_audio", "top1_av"):
            r[f"delta_{key}"] = r[key] - full[key]
    summary = {"store": str(store_path), "eval_split": eval_split, "labels": str(labels_path),
               "pretrain_config": config.to_dict(), "finetune_config": fine_base.to_dict(), "results": results}
    if sweep_static_weights:
        summary["sweep_png"] = str(plot_sweep(results, sweep_static_weights, out_dir / "static_weight_sweep.png"))
    atomic_write_json(out_dir / "ablation.json", summary)
    table = markdown_table(results)
    atomic_write_bytes(out_dir / "ablation.md", lambda f: f.write(table.encode()))
    summary["markdown"] = table
    return summary


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| Method | A top-1 (%) | Δ A | A-V top-1 (%) | Δ A-V | V top-1 (%) | confusion mean |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        da = "" if name == "full" else f"{100 * r['delta_top1_audio']:+.1f}"
        dav = "" if name == "full" else f"{100 * r['delta_top1_av']:+.1f}"
        cm = r["confusion_mean"]
        lines.append(f"| {r['title']} | {100 * r['top1_audio']:.1f} | {da} | {100 * r['top1_av']:.1f} | {dav} | "
                     f"{100 * r['top1_video']:.1f} | {'' if cm is None else f'{cm:.3f}'} |")
    return "\n".join(lines) + "\n"


def plot_sweep(results: dict[str, dict[str, Any]], weights: Sequence[float], path: Path) -> Path:
    """Figure 3: accuracy against the fixed confusion-loss weight; dynamic weighting as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = sorted(float(w) for w in weights)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, colour, label in (("top1_audio", "tab:blue", "audio"), ("top1_av", "tab:orange", "audio-visual")):
        ax.plot(ws, [100 * results[f"static_w{w:g}"][key] for w in ws], marker="o", color=colour,
                label=f"{label}, fixed weight")
        ax.axhline(100 * results["full"][key], color=colour, linestyle="--", label=f"{label}, dynamic M-hat")
    ax.set_xlabel("fixed confusion-loss weight w")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs fixed confusion weight (cf. paper Fig. 3)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
