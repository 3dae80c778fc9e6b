"""``diccae ablate``: the paper's Table 2 and Figure 3 on your own store.

Each variant is a full pretrain -> finetune -> eval, repeated with ``seeds``
seeds (0..N-1; the same seeds for every variant), so the only difference between
rows is the switched-off component.  Per head the table gives mean ± sd over
the seeds, the linear probe on the same inputs (:mod:`trainer.probe`), and the
paired difference to ``full`` (same seed, same data) with a 95 % t interval;
"within noise" when the interval covers 0.

=====================  =========================================================
variant                what changes (both phases unless stated)
=====================  =========================================================
full                   nothing: DICCAE as described
no_confusion_loss      lambda_cl = 0 (w/o L_CL)
static_weight          every pair weighs 1 instead of M-hat (w/o M_ij)
no_infonce             lambda_nce = 0 (w/o L_InfoNCE)
no_recluster           pretrain keeps the round-0 labels (w/o Refinement)
no_cluster_guided      pretrain with InfoNCE only, no pseudo-labels (w/o K-means)
=====================  =========================================================

``sweep_static_weights`` adds one static-weight run per value and draws
accuracy against the weight with the dynamic (full) result as a line (Fig. 3).
What the sweep varies (the paper: "the weights of the confusion loss"): with
``weighting=static`` every pair weighs 1 and w multiplies the whole confusion
term, i.e. its weight against the cross-entropy and InfoNCE terms.  (A constant
weight on the different-class pairs alone would cancel in the confusion loss's
weight-sum normaliser, up to re-balancing same- against different-class pairs.)
Finished variants (an ``eval.json`` present) are reused, so an interrupted
ablation continues where it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import InputError
from featstore.progress import ProgressFn
from trainer.config import TrainConfig
from trainer.evaluate import evaluate
from trainer.phases import finetune, pretrain
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


HEADS = ("audio", "video", "av")


def variant_configs(
    name: str,
    config: TrainConfig,
    finetune_config: TrainConfig | None = None,
    seed: int | None = None,
) -> tuple[TrainConfig, TrainConfig]:
    """The pretrain and finetune configs of one variant (and seed): the full ones with its tweak."""
    if name not in VARIANTS:
        raise InputError(f"unknown ablation variant {name!r}; choose from {', '.join(VARIANTS)}")
    pre, fine = _copy(config), _copy(finetune_config or config)
    VARIANTS[name][1](pre, fine)
    if seed is not None:
        pre.seed = fine.seed = seed
    return pre, fine


def run_variant(
    store_path,
    *,
    out_dir: Path,
    labels_path,
    pre: TrainConfig,
    fine: TrainConfig,
    eval_split: str,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    done = out_dir / "eval" / "eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    pre_dir, fine_dir = out_dir / "pretrain", out_dir / "finetune"
    resume_pre = (pre_dir / "checkpoint.pt").is_file()
    pretrain(
        store_path,
        labels_path=labels_path,
        out_dir=pre_dir,
        config=pre,
        resume=resume_pre,
        progress=progress,
    )
    resume_fine = (fine_dir / "checkpoint.pt").is_file()
    finetune(
        store_path,
        init_checkpoint=pre_dir / "checkpoint.pt",
        out_dir=fine_dir,
        config=fine,
        resume=resume_fine,
        progress=progress,
    )
    return evaluate(
        fine_dir,
        store_path,
        split=eval_split,
        out_dir=out_dir / "eval",
        device=fine.device,
        plot=fine.plots,
    )


def seed_dir(out_dir: Path, name: str, seed: int, seeds: int) -> Path:
    """``OUT/NAME`` for a one-seed ablation (the layout before seeds), ``OUT/NAME/seedS`` otherwise."""
    return out_dir / name if seeds == 1 else out_dir / name / f"seed{seed}"


def ablate(
    store_path,
    *,
    out_dir: str | Path,
    config: TrainConfig,
    labels_path: str | Path,
    finetune_config: TrainConfig | None = None,
    variants: Sequence[str] | None = None,
    sweep_static_weights: Sequence[float] | None = None,
    eval_split: str = "test",
    seeds: int = 3,
    on_variant: Callable[[str, dict[str, Any]], None] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the ablations; writes ``ablation.json``, ``ablation.md`` and (with a sweep) ``static_weight_sweep.png``.

    ``progress`` receives each training phase's updates (see :mod:`trainer.phases`).
    """
    out_dir = Path(out_dir)
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    names = list(variants) if variants else list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise InputError(
            f"unknown ablation variant(s) {unknown}; choose from {', '.join(VARIANTS)}"
        )
    if "full" not in names:
        names.insert(0, "full")  # deltas are against the full model
    fine_base = finetune_config or config
    jobs: list[tuple[str, str, Callable[[int], tuple[TrainConfig, TrainConfig]]]] = []
    for name in names:

        def variant(s: int, name: str = name) -> tuple[TrainConfig, TrainConfig]:
            return variant_configs(name, config, fine_base, s)

        jobs.append((name, VARIANTS[name][0], variant))
    for w in sweep_static_weights or []:

        def sweep(s: int, w: float = float(w)) -> tuple[TrainConfig, TrainConfig]:
            pre, fine = variant_configs("full", config, fine_base, s)
            _both(weighting="static", static_weight=w)(pre, fine)
            return pre, fine

        jobs.append((f"static_w{w:g}", f"static weight {w:g}", sweep))
    per_seed: dict[str, list[dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    base_seed = config.seed
    for name, title, make in jobs:
        runs = []
        for i in range(seeds):
            pre, fine = make(base_seed + i)
            r = run_variant(
                store_path,
                out_dir=seed_dir(out_dir, name, i, seeds),
                labels_path=labels_path,
                pre=pre,
                fine=fine,
                eval_split=eval_split,
                progress=progress,
            )
            runs.append(
                {
                    **{f"top1_{h}": r.get(f"top1_{h}") for h in HEADS},
                    **{f"probe_{h}": r.get(f"probe_{h}") for h in HEADS},
                    "confusion_mean": r["confusion_fused"]["mean"],
                    "confusion_var": r["confusion_fused"]["var"],
                    "seed": base_seed + i,
                    "n_rows": r.get("n_rows"),
                }
            )
        per_seed[name] = runs
        results[name] = {"title": title, "seeds": [r["seed"] for r in runs], **summarise(runs)}
        if on_variant:
            on_variant(name, results[name])
    for name, r in results.items():
        for h in HEADS:
            r[f"delta_top1_{h}"] = paired_difference(
                [x[f"top1_{h}"] for x in per_seed[name]], [x[f"top1_{h}"] for x in per_seed["full"]]
            )
    summary = {
        "store": str(store_path),
        "eval_split": eval_split,
        "labels": str(labels_path),
        "n_seeds": seeds,
        "pretrain_config": config.to_dict(),
        "finetune_config": fine_base.to_dict(),
        "results": results,
        "per_seed": per_seed,
    }
    if sweep_static_weights:
        summary["sweep_png"] = str(
            plot_sweep(results, sweep_static_weights, out_dir / "static_weight_sweep.png")
        )
    atomic_write_json(out_dir / "ablation.json", summary)
    table = markdown_table(results)
    atomic_write_bytes(out_dir / "ablation.md", lambda f: f.write(table.encode()))
    summary["markdown"] = table
    return summary


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over seeds of every score (``top1_av`` = the mean, ``top1_av_sd`` its sd)."""
    out: dict[str, Any] = {}
    for key in [
        *(f"top1_{h}" for h in HEADS),
        *(f"probe_{h}" for h in HEADS),
        "confusion_mean",
        "confusion_var",
    ]:
        vals = [float(r[key]) for r in runs if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
        out[f"{key}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return out


def paired_difference(
    values: Sequence[float], reference: Sequence[float], level: float = 0.95
) -> dict[str, Any]:
    """Mean of ``values - reference`` (same seeds) with a ``level`` t interval.

    ``within_noise`` is True when the interval covers 0, None when it cannot be
    computed (one seed).
    """
    d = np.asarray(values, float) - np.asarray(reference, float)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n, "within_noise": None}
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "n": n,
        "within_noise": bool(mean - half <= 0.0 <= mean + half),
    }


def _pm(r: dict[str, Any], key: str) -> str:
    if r.get(key) is None:
        return "–"
    sd = r.get(f"{key}_sd")
    return f"{100 * r[key]:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}")


def format_delta(d: dict[str, Any] | None) -> str:
    """``+1.2 [-0.5, +2.9] within noise``: paired difference to full, in points."""
    if not d:
        return ""
    text = f"{100 * d['mean']:+.1f}"
    if d.get("low") is None:
        return text + " (1 seed: no interval)"
    text += f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    return text + (" within noise" if d["within_noise"] else "")


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    n = len(next(iter(results.values()))["seeds"]) if results else 0
    lines = [
        f"Top-1 (%) on the test rows, mean ± sd over {n} seed(s); probe = logistic regression on the "
        "same inputs; Δ = paired difference to DICCAE (same seeds), 95 % interval.",
        "",
        "| Method | A | probe A | Δ A | V | probe V | Δ V | A-V | probe A-V | Δ A-V | confusion mean |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---|---:|",
    ]
    for name, r in results.items():
        cells = []
        for h in HEADS:
            cells += [
                _pm(r, f"top1_{h}"),
                _pm(r, f"probe_{h}"),
                "" if name == "full" else format_delta(r.get(f"delta_top1_{h}")),
            ]
        cm = r["confusion_mean"]
        lines.append(
            f"| {r['title']} | " + " | ".join(cells) + f" | {'' if cm is None else f'{cm:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


def plot_sweep(results: dict[str, dict[str, Any]], weights: Sequence[float], path: Path) -> Path:
    """Figure 3: accuracy against the fixed confusion-loss weight; dynamic weighting as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = sorted(float(w) for w in weights)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, colour, label in (
        ("top1_audio", "tab:blue", "audio"),
        ("top1_av", "tab:orange", "audio-visual"),
    ):
        ax.plot(
            ws,
            [100 * results[f"static_w{w:g}"][key] for w in ws],
            marker="o",
            color=colour,
            label=f"{label}, fixed weight",
        )
        ax.axhline(
            100 * results["full"][key],
            color=colour,
            linestyle="--",
            label=f"{label}, dynamic M-hat",
        )
    ax.set_xlabel("fixed confusion-loss weight w")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs fixed confusion weight (cf. paper Fig. 3)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
