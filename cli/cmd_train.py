"""``diccae train pretrain|finetune``, ``diccae eval`` and ``diccae ablate``.

Thin wrappers: options -> :class:`trainer.config.TrainConfig` -> a function in
``trainer`` -> rich tables and bars.  Every field of the config is an option, shared
by ``pretrain``, ``finetune`` and ``ablate`` and by ``python -m trainer`` (one table,
:data:`trainer.options.TRAIN_OPTIONS`, added here by ``_with_train_options``);
``--preset paper`` starts from the paper's exact settings instead of the defaults
(docs/paper-mapping.md); ``--config FILE`` loads a saved ``config.json`` first and
options override either.  Progress comes from the library as data and is drawn by
:func:`cli.progress.rich_progress`.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli._util import parse_names, parse_numbers
from cli.progress import rich_progress
from featstore.errors import InputError
from trainer.options import (
    CONFIG_HELP,
    NPROC_HELP,
    PRESET_HELP,
    TRAIN_OPTIONS,
    build_config,
    keep_saved_epochs,
)

console = Console()


def _with_train_options(func):
    """Append every TrainConfig option to ``func``'s signature (Typer reads ``__signature__``)."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.name != "options"]
    for name, _key, typ, help_ in TRAIN_OPTIONS:
        flag = f"--{name.replace('_', '-')}"
        if typ is bool:
            opt = typer.Option(f"{flag}/--no-{name.replace('_', '-')}", help=help_)
        else:
            opt = typer.Option(flag, help=help_)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[typ | None, opt],
            )
        )
    params.append(
        inspect.Parameter(
            "preset",
            inspect.Parameter.KEYWORD_ONLY,
            default="default",
            annotation=Annotated[
                str,
                typer.Option("--preset", help=PRESET_HELP),
            ],
        )
    )
    params.append(
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)],
        )
    )
    params.append(
        inspect.Parameter(
            "progress",
            inspect.Parameter.KEYWORD_ONLY,
            default=True,
            annotation=Annotated[
                bool, typer.Option("--progress/--no-progress", help="rich progress bars")
            ],
        )
    )
    names = {n for n, *_ in TRAIN_OPTIONS} | {"config_file", "progress", "preset"}

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        return func(*args, options=options, **kwargs)

    # typer reads the options from the signature; functools.wraps typing has no slot for it
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


def _print_summary(summary, title: str) -> None:
    from trainer.distributed import is_rank_zero

    if not is_rank_zero():  # under torchrun every rank runs the command; one table is enough
        return
    t = Table(title=title)
    for col in (
        "epoch",
        "loss",
        "top-1 A",
        "top-1 V",
        "top-1 A-V",
        "confusion mean",
        "confusion var",
        "round",
    ):
        t.add_column(col, justify="right")
    for r in summary.metrics[-10:]:

        def f(k, scale=1.0, r=r):
            v = r.get(k)
            return "-" if v is None else f"{scale * v:.3g}"

        t.add_row(
            str(r["epoch"]),
            f("loss_total"),
            f("top1_audio", 100),
            f("top1_video", 100),
            f("top1_av", 100),
            f("confusion_mean"),
            f("confusion_var"),
            str(r.get("label_round", "")),
        )
    console.print(t)
    stop = summary.stop
    if stop.get("stop_reason"):
        best = (
            f"; best eval epoch {stop['best_epoch']} (score {100 * stop['best_score']:.1f} %, kept in best.pt)"
            if stop.get("best_epoch")
            else "; no best checkpoint (not monitored)"
        )
        console.print(
            f"stopped after epoch {stop['stopped_epoch']} of {summary.epochs}: {stop['stop_reason']}{best}"
        )
    console.print(
        f"run written to [bold]{escape(str(summary.run_dir))}[/] (checkpoint.pt, metrics.jsonl/csv, training_curves.png)"
    )


def pretrain_cmd(
    store: Annotated[Path, typer.Argument(help="feature store directory")],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="round-0 label file from `diccae cluster`")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/pretrain"),
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out exactly")
    ] = False,
    infonce_only: Annotated[
        bool, typer.Option("--infonce-only", help="no pseudo-labels: InfoNCE alignment only")
    ] = False,
    nproc: Annotated[int, typer.Option("--nproc", help=NPROC_HELP)] = 1,
    options: dict | None = None,
) -> None:
    """Cluster-guided self-supervised pretraining on K-means pseudo-labels (paper section 2.3)."""
    cfg = keep_saved_epochs(build_config(options or {}), options or {}, out, resume)
    cfg.loss.infonce_only = infonce_only or cfg.loss.infonce_only
    summary = _run_phase(
        "pretrain",
        nproc,
        store_path=store,
        labels_path=labels,
        out_dir=out,
        config=cfg,
        resume=resume,
    )
    _print_summary(summary, "pretrain")


def finetune_cmd(
    store: Annotated[Path, typer.Argument(help="feature store directory")],
    init: Annotated[
        Path | None, typer.Option("--init", help="pretrain checkpoint (RUN/checkpoint.pt or RUN)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/finetune"),
    labels: Annotated[
        Path | None, typer.Option("--labels", help="label file instead of the store's ground truth")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out exactly")
    ] = False,
    nproc: Annotated[int, typer.Option("--nproc", help=NPROC_HELP)] = 1,
    options: dict | None = None,
) -> None:
    """Supervised fine-tuning with new heads, backbone from a pretrain checkpoint."""
    cfg = keep_saved_epochs(build_config(options or {}), options or {}, out, resume)
    summary = _run_phase(
        "finetune",
        nproc,
        store_path=store,
        init_checkpoint=init,
        out_dir=out,
        config=cfg,
        labels_path=labels,
        resume=resume,
    )
    _print_summary(summary, "finetune")


def _run_phase(phase: str, nproc: int, **kwargs):
    """One process, N spawned DDP ranks (--nproc), or this rank of a torchrun job,
    with rich bars on the rank that draws."""
    from trainer.distributed import is_rank_zero
    from trainer.launch import launch_local

    with rich_progress(kwargs["config"].progress and is_rank_zero()) as progress:
        return launch_local(phase, nproc, progress=progress, **kwargs)


def eval_cmd(
    run: Annotated[Path, typer.Argument(help="run directory (holds checkpoint.pt)")],
    store: Annotated[Path, typer.Argument(help="feature store directory")],
    split: Annotated[str, typer.Option("--split", help="split to score")] = "test",
    out: Annotated[
        Path | None, typer.Option("--out", help="where eval.json and the PNG go (default: RUN)")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="score against this label file")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    checkpoint: Annotated[
        str,
        typer.Option(
            "--checkpoint", help="best (the best eval epoch, when the run kept one) | last"
        ),
    ] = "best",
    probe: Annotated[
        bool,
        typer.Option(
            "--probe/--no-probe", help="fit the logistic-regression probe on the run's inputs"
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Top-1 of the audio, video and audio-visual heads beside a linear probe; confusion of the fused features."""
    from trainer.evaluate import evaluate

    result = evaluate(
        run,
        store,
        split=split,
        out_dir=out,
        labels_path=labels,
        device=device,
        checkpoint=checkpoint,
        probe=probe,
    )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    t = Table(
        title=f"{run} on split {split!r} ({result['n_rows']} clips, {result['num_classes']} classes)"
    )
    t.add_column("metric")
    t.add_column("trained", justify="right")
    t.add_column("probe", justify="right")
    t.add_column("trained − probe", justify="right")
    for h, name in (
        ("audio", "top-1 audio (A)"),
        ("video", "top-1 video (V)"),
        ("av", "top-1 audio-visual (A-V)"),
    ):
        p = result.get(f"probe_{h}")
        t.add_row(
            name,
            f"{100 * result[f'top1_{h}']:.2f} %",
            "–" if p is None else f"{100 * p:.2f} %",
            "–" if p is None else f"{100 * (result[f'top1_{h}'] - p):+.2f}",
        )
    for key, name in (("confusion_input", "input embeddings"), ("confusion_fused", "fused z")):
        if key in result and result[key]["mean"] is not None:
            t.add_row(
                f"confusion mean / var, {name}",
                f"{result[key]['mean']:.4f} / {result[key]['var']:.4f}",
                "",
                "",
            )
    console.print(t)
    c = result["checkpoint"]
    console.print(
        f"scored the {c['which']} checkpoint: epoch {c['epoch']} of {c['last_epoch']}"
        + (f" (run stopped: {c['stop_reason']})" if c.get("stop_reason") else "")
    )
    if "probe_av" in result:
        console.print(
            f"probe: logistic regression on the standardised input embeddings, fitted on the run's "
            f"{result['probe_n_train']} training rows"
        )
    if result.get("excluded_update_rows"):
        console.print(
            f"[yellow]left out {result['excluded_update_rows']} rows of the run's update set (they steered training)[/]"
        )
    if "histogram_png" in result:
        console.print(f"histogram: {escape(str(result['histogram_png']))}")


def ablate_cmd(
    store: Annotated[Path, typer.Argument(help="feature store directory")],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="round-0 label file for pretraining (required)")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="directory of the ablation runs and tables")
    ] = Path("runs/ablate"),
    variants: Annotated[
        str | None,
        typer.Option("--variants", help="comma-separated subset, e.g. full,no_confusion_loss"),
    ] = None,
    finetune_epochs: Annotated[
        int | None,
        typer.Option("--finetune-epochs", help="epochs of each finetune (default: --epochs)"),
    ] = None,
    sweep_static_weight: Annotated[
        str | None,
        typer.Option("--sweep-static-weight", help="w1,w2,... fixed weights for Figure 3"),
    ] = None,
    test_split: Annotated[
        str, typer.Option("--test-split", help="split the variants are scored on")
    ] = "test",
    seeds: Annotated[
        int,
        typer.Option("--seeds", help="seeds per variant (mean ± sd, paired 95 % interval to full)"),
    ] = 3,
    options: dict | None = None,
) -> None:
    """Table 2 ablations (each = pretrain + finetune + eval, same seeds) and the Figure 3 sweep."""
    from trainer.ablate import ablate

    if labels is None:
        raise InputError("ablate needs --labels ROUND0.npy (from `diccae cluster`)")
    cfg = build_config(options or {})
    fine = build_config(options or {})
    if finetune_epochs is not None:
        fine.epochs = finetune_epochs
    weights = None
    if sweep_static_weight:
        weights = list(parse_numbers(sweep_static_weight, "--sweep-static-weight", float))
    names = list(parse_names(variants, "--variants", "variant")) if variants else None
    with rich_progress(cfg.progress, transient=True) as progress:
        summary = ablate(
            store,
            out_dir=out,
            config=cfg,
            labels_path=labels,
            finetune_config=fine,
            variants=names,
            sweep_static_weights=weights,
            eval_split=test_split,
            seeds=seeds,
            on_variant=lambda n, r: console.print(
                f"[green]done[/] {n}: A {100 * r['top1_audio']:.1f} % (probe {100 * r['probe_audio']:.1f}), "
                f"A-V {100 * r['top1_av']:.1f} % (probe {100 * r['probe_av']:.1f})"
            ),
            progress=progress,
        )
    console.print(summary["markdown"], markup=False)
    console.print(
        f"tables: {out / 'ablation.md'}, {out / 'ablation.json'}"
        + (f"; figure: {summary['sweep_png']}" if weights else ""),
        markup=False,
    )


def register(app: typer.Typer) -> None:
    train = typer.Typer(help="Train the DICCAE model on a feature store.", no_args_is_help=True)
    train.command("pretrain")(_with_train_options(pretrain_cmd))
    train.command("finetune")(_with_train_options(finetune_cmd))
    app.add_typer(train, name="train")
    app.command("eval")(eval_cmd)
    app.command("ablate")(_with_train_options(ablate_cmd))
