"""``report.md``: every number a demo run measured, beside the pictures it cites.

Pure formatting of ``run.numbers`` (the same numbers are ``report.json``); it reads
nothing but the audit JSON the audit stage wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from demo.settings import DemoRun


def format_number(x: Any, digits: int = 3) -> str:
    """Floats to ``digits`` decimals, None to a dash: one look in report.md and the terminal."""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return "–" if x is None else str(x)


def format_percent(x: Any) -> str:
    """A fraction in [0, 1] as ``12.5%`` (None: a dash)."""
    return "–" if x is None else f"{100 * float(x):.1f}%"


def probe_gap(e: dict[str, Any], head: str) -> float | None:
    """Trained head's top-1 minus the linear probe's on the same inputs (None without a probe)."""
    p = e.get(f"probe_{head}")
    return None if p is None else e[f"top1_{head}"] - p


def format_points(x: Any) -> str:
    """A difference of fractions as signed percentage points (``+3.1``)."""
    return "–" if x is None else f"{100 * float(x):+.1f}"


def write_report(run: DemoRun) -> Path:
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


def _report_headline(run: DemoRun) -> list[str]:
    e = run.numbers["eval"]
    before = run.numbers["confusion_raw"]["audio+video"]
    after = run.numbers["confusion_fused"]
    c = e["checkpoint"]
    return [
        "## Headline",
        "",
        "| | audio | video | audio-visual |",
        "|---|---:|---:|---:|",
        f"| DICCAE top-1 on the test split ({e['n_rows']} clips) | {format_percent(e['top1_audio'])} | {format_percent(e['top1_video'])} "
        f"| {format_percent(e['top1_av'])} |",
        f"| linear probe on the same inputs (logistic regression, {e.get('probe_n_train')} training rows) "
        f"| {format_percent(e.get('probe_audio'))} | {format_percent(e.get('probe_video'))} | {format_percent(e.get('probe_av'))} |",
        f"| trained − probe (points) | {format_points(probe_gap(e, 'audio'))} | {format_points(probe_gap(e, 'video'))} "
        f"| {format_points(probe_gap(e, 'av'))} |",
        "",
        f"Scored the {c['which']} checkpoint (epoch {c['epoch']} of {c['last_epoch']}; the run stopped: "
        f"{c.get('stop_reason')}).",
        "",
        "| confusion degree M (test split, true classes) | mean | variance |",
        "|---|---:|---:|",
        f"| raw audio+video embeddings | {format_number(before['mean'])} | {format_number(before['var'])} |",
        f"| fused features after DICCAE training | {format_number(after['mean'])} | {format_number(after['var'])} |",
        "",
    ]


def _report_data(run: DemoRun) -> list[str]:
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


def _report_extract(run: DemoRun) -> list[str]:
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


def _report_cluster(run: DemoRun) -> list[str]:
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


def _report_confusion_raw(run: DemoRun) -> list[str]:
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
            f"| {feat} | {format_number(r['mean'])} | {format_number(r['var'])} | {format_percent(r['fraction_overlapping'])} | {pairs} |"
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


def _report_audit(run: DemoRun) -> list[str]:
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


def _report_training(run: DemoRun) -> list[str]:
    pre, fine = run.numbers["pretrain"], run.numbers["finetune"]
    pf, ff = pre["final"], fine["final"]
    out = [
        "## Training",
        "",
        f"Pretraining on the cluster labels: {pre['epochs']} epochs, label rounds "
        + ", ".join(f"`{p}`" for p in pre["label_rounds"])
        + f". Last epoch: loss {format_number(pf.get('loss_total'))}, top-1 against the cluster labels "
        f"(audio / video / fused) {format_percent(pf.get('top1_audio'))} / {format_percent(pf.get('top1_video'))} / {format_percent(pf.get('top1_av'))}.",
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
        f"{format_percent(ff.get('top1_audio'))} / {format_percent(ff.get('top1_video'))} / {format_percent(ff.get('top1_av'))}, "
        f"confusion mean {format_number(ff.get('confusion_mean'))} (update set).",
        "",
        "![pretraining curves](runs/pretrain/training_curves.png)",
        "",
        "![finetuning curves](runs/finetune/training_curves.png)",
        "",
    ]
    return out


def _report_eval(run: DemoRun) -> list[str]:
    e = run.numbers["eval"]
    names = run.numbers["store"]["class_names"]
    out = [
        "## Evaluation (Table 1 analogue, test split)",
        "",
        f"top-1 audio {format_percent(e['top1_audio'])}, video {format_percent(e['top1_video'])}, audio-visual {format_percent(e['top1_av'])}.",
        "",
    ]
    per = e.get("per_class_top1_av") or []
    if per:
        out += ["| class | audio-visual top-1 |", "|---|---:|"]
        out += [
            f"| `{names[i] if i < len(names) else i}` | {format_percent(v)} |"
            for i, v in enumerate(per)
        ]
        out.append("")
    if e.get("histogram"):
        out += [f"![confusion of the inputs vs the fused features]({e['histogram']})", ""]
    return out


def _report_fused(run: DemoRun) -> list[str]:
    raw = run.numbers["confusion_raw"]["audio+video"]
    f = run.numbers["confusion_fused"]
    top = "; ".join(_pair(p) for p in f["top_pairs"][:3]) or "–"
    return [
        "## Confusion degree before and after (Fig. 2 analogue)",
        "",
        f"Raw audio+video embeddings: mean {format_number(raw['mean'])}, variance {format_number(raw['var'])}, "
        f"{format_percent(raw['fraction_overlapping'])} of class pairs overlapping. "
        f"Fused features of the fine-tuned model: mean {format_number(f['mean'])}, variance {format_number(f['var'])}, "
        f"{format_percent(f['fraction_overlapping'])} overlapping. Most confused pairs after training: {top}.",
        "",
        f"![confusion distribution before and after]({f['dir']}/histogram.png)",
        "",
        f"![most confused classes after training]({f['dir']}/heatmap.png)",
        "",
    ]


def _report_ablation(run: DemoRun) -> list[str]:
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
