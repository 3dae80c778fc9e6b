#!/usr/bin/env python
"""Draw docs/architecture.png: the stages, the artefacts between them, who owns what.

    python scripts/draw_architecture.py [--out docs/architecture.png]

Boxes with square corners are processes (a CLI command and the package that
implements it); rounded boxes are artefacts on disk.  Regenerate after changing
the pipeline so the picture and docs/architecture.md stay in step.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

STAGE: dict[str, Any] = dict(fc="#dbe9f6", ec="#2b5d8a")
ARTEFACT: dict[str, Any] = dict(fc="#fdf1d6", ec="#9a6b00")


def box(ax, x, y, w, h, title, body, style, rounded):
    shape = "round,pad=0.02,rounding_size=0.12" if rounded else "square,pad=0.02"
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=shape, lw=1.4, **style))
    ax.text(x + w / 2, y + h - 0.17, title, ha="center", va="top", fontsize=10.5, weight="bold")
    ax.text(x + w / 2, y + h - 0.50, body, ha="center", va="top", fontsize=8, linespacing=1.35)
    return (x, y, w, h)


def _anchor(r, side):
    """A point on a box edge: ``"r"``, ``"l"``, ``"t"``, ``"b"`` or e.g. ``"t0.3"`` (30% along)."""
    x, y, w, h = r
    f = float(side[1:]) if len(side) > 1 else 0.5
    return {
        "r": (x + w, y + h * f),
        "l": (x, y + h * f),
        "t": (x + w * f, y + h),
        "b": (x + w * f, y),
    }[side[0]]


def arrow(
    ax, a, b, label="", *, start="r", end="l", rad=0.0, color="#333333", ls="-", dy=0.1, dx=0.0
):
    p, q = _anchor(a, start), _anchor(b, end)
    ax.add_patch(
        FancyArrowPatch(
            p,
            q,
            arrowstyle="-|>",
            mutation_scale=13,
            lw=1.3,
            color=color,
            ls=ls,
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if label:
        ax.text(
            (p[0] + q[0]) / 2 + dx,
            (p[1] + q[1]) / 2 + dy,
            label,
            ha="center",
            va="bottom",
            fontsize=7.5,
            color=color,
            style="italic",
        )


def draw(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(16, 8.8))
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 8.8)
    ax.axis("off")

    top, mid, bot = 5.7, 3.3, 0.9
    clips = box(
        ax,
        0.2,
        top,
        2.3,
        1.8,
        "media + manifest",
        "MP4/WAV clips\nCSV path,label,split,id\nCAV-MAE JSON, UCF101 tree",
        ARTEFACT,
        True,
    )
    extract = box(
        ax,
        3.2,
        top,
        2.7,
        1.8,
        "1  diccae extract",
        "featstore.extract: manifest,\ndecode (PyAV), encoders, pipeline\nresumable, per-clip failures",
        STAGE,
        False,
    )
    store = box(
        ax,
        6.6,
        top - 0.2,
        2.9,
        2.2,
        "feature store (Zarr v3)",
        "audio (N,Da)  video (N,Dv)\nstatus, label, split, ids\nmissing flags, encoder attrs\n"
        "(training only reads it)\nfeatstore.store",
        ARTEFACT,
        True,
    )
    cluster = box(
        ax,
        10.2,
        top,
        2.7,
        1.8,
        "2  diccae cluster",
        "featstore.kmeans: KMeans\n(sklearn / faiss / torch / cuML)\nfeatstore.labels\nK=300, 20 restarts",
        STAGE,
        False,
    )
    confusion = box(
        ax,
        13.4,
        top,
        2.4,
        1.8,
        "diccae confusion",
        "featstore.confusion\nPCA, 95% circles\nEq. 2, Eq. 3\nNumPy / CuPy kernel",
        STAGE,
        False,
    )
    labels = box(
        ax,
        10.2,
        mid,
        2.7,
        1.6,
        "label files",
        "roundN.npy (int32, -1 = none)\n+ .npy.json: K, inertia,\nseed, store fingerprint",
        ARTEFACT,
        True,
    )
    analysis = box(
        ax,
        13.4,
        mid,
        2.4,
        1.6,
        "analysis dir",
        "confusion.npy, stats.json\nhistogram / heatmap /\ncircles PNG, top_pairs.csv",
        ARTEFACT,
        True,
    )
    ckpt = box(
        ax,
        0.2,
        bot,
        2.3,
        2.0,
        "run dirs",
        "checkpoint.pt (weights_only)\nconfig.json\nmetrics.jsonl / .csv\nlabel rounds",
        ARTEFACT,
        True,
    )
    pretrain = box(
        ax,
        3.2,
        bot,
        3.0,
        2.0,
        "3  diccae train pretrain",
        "trainer: MLP encoders, InfoNCE,\nfusion MLP, L_DICCAE (Eq. 1, 4)\nM-hat each epoch (Eq. 2-3)\n"
        "re-cluster every 10 epochs",
        STAGE,
        False,
    )
    finetune = box(
        ax,
        6.9,
        bot,
        2.6,
        2.0,
        "diccae train finetune",
        "trainer: new heads on\nground-truth classes,\nsame losses",
        STAGE,
        False,
    )
    evalb = box(
        ax,
        10.2,
        bot,
        2.7,
        2.0,
        "diccae eval / ablate",
        "top-1 A / V / A-V\nconfusion stats of z\nTable 2 variants, Fig. 3",
        STAGE,
        False,
    )
    results = box(
        ax,
        13.4,
        bot,
        2.4,
        2.0,
        "results",
        "eval.json, histogram.png\nablation.md / .json\nsweep PNG",
        ARTEFACT,
        True,
    )

    arrow(ax, clips, extract)
    arrow(ax, extract, store, "write shards", start="r", end="l0.6")
    arrow(ax, store, cluster, "features", start="r0.6")
    arrow(ax, cluster, labels, start="b", end="t")
    arrow(ax, store, confusion, "features", start="t0.8", end="t0.5", rad=-0.12, dy=0.45)
    arrow(ax, labels, confusion, "labels", start="r", end="b0.3", rad=0.25, dy=0.25, dx=-0.55)
    arrow(ax, confusion, analysis, start="b0.7", end="t0.7")
    arrow(ax, labels, pretrain, "round-0 labels", start="l", end="t0.75", rad=0.15, dy=0.05)
    arrow(ax, store, pretrain, "shards", start="b0.3", end="t0.9", rad=0.0, dx=-0.35, dy=-0.2)
    arrow(
        ax,
        pretrain,
        store,
        "fused z, re-clustered",
        start="t0.3",
        end="b0.05",
        rad=-0.3,
        color="#8a2b2b",
        ls="--",
        dx=-1.0,
        dy=0.3,
    )
    arrow(ax, store, finetune, "shards +\ntrue labels", start="b0.8", end="t0.6", dx=0.6, dy=-0.95)
    arrow(ax, pretrain, ckpt, start="l", end="r")
    arrow(ax, pretrain, finetune, "--init", start="r0.4", end="l0.4")
    arrow(ax, finetune, evalb, "checkpoint", start="r0.4", end="l0.4")
    arrow(ax, evalb, results)

    ax.text(
        0.2,
        0.3,
        "featstore/{store,extract,kmeans,labels,confusion,analysis}/: one package per stage    "
        "trainer/: model, losses, loop, phases, DDP (never imports extraction code)    "
        "demo/    cli/: thin Typer commands (packages and imports: docs/packages.png)",
        fontsize=8.5,
        color="#333333",
    )
    ax.text(
        8.0, 8.55, "diccae: stages, artefacts and owners", ha="center", fontsize=14, weight="bold"
    )
    for i, (style, name) in enumerate(
        ((STAGE, "process (command: package)"), (ARTEFACT, "artefact on disk"))
    ):
        ax.add_patch(
            FancyBboxPatch((0.25 + i * 3.6, 8.05), 0.35, 0.25, boxstyle="square,pad=0.01", **style)
        )
        ax.text(0.7 + i * 3.6, 8.17, name, va="center", fontsize=8.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Draw docs/architecture.png")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    print(f"wrote {draw(parser.parse_args().out)}")
