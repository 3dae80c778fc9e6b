"""``diccae extract`` and ``diccae encoders``: thin wrappers over featstore.extract.pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()

EXTRACT_HELP = """Decode every clip of MANIFEST, embed it, and write the embeddings to STORE.

MANIFEST is a CSV (path,label[,split][,id]), a CAV-MAE dataset JSON (with
--label-csv) or a folder with one sub-folder per class (UCF101 layout).

Rerunning the same command resumes: finished chunks are kept, the rest is redone, and
the store ends identical to an uninterrupted run.  A store made with other encoders
or settings is refused (use --overwrite to start fresh).

Exit status: 0 all clips extracted; 2 bad input (manifest, option); 3 store missing,
damaged or made with another configuration; 4 pretrained weights unavailable (the
message says where to put the file); 5 requested device unavailable; 6 the run
finished but some clips failed (listed with reasons; see also `diccae store info
STORE --failures`).
"""


def _encoder_option(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def extract_command(
    manifest: Path = typer.Argument(..., help="Manifest: CSV, CAV-MAE JSON or class-folder tree."),
    store: Path = typer.Argument(..., help="Store directory to create or resume."),
    audio_encoder: str = typer.Option(
        "kaldi-fbank", help="Audio encoder (see `diccae encoders`), or 'none'."
    ),
    video_encoder: str = typer.Option(
        "frame-stats", help="Video encoder (see `diccae encoders`), or 'none'."
    ),
    audio_weights: str = typer.Option(
        "default", help="'default' (library weights), a checkpoint path, or 'random'."
    ),
    video_weights: str = typer.Option(
        "default", help="'default' (library weights), a checkpoint path, or 'random'."
    ),
    batch_size: int = typer.Option(16, min=1, help="Clips per encoder batch."),
    workers: int = typer.Option(
        2, min=0, help="Decode worker processes (0: decode in the main process)."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    chunk_rows: int = typer.Option(
        1024, min=1, help="Rows per store chunk (the unit of resumption)."
    ),
    dtype: str = typer.Option("float16", help="float16 | float32"),
    compression: str = typer.Option(
        "zstd",
        help="zstd (smaller) | none (faster full passes: clustering, training from local disk).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete an existing store and start fresh."
    ),
    label_csv: Path | None = typer.Option(
        None, help="Label CSV (index,mid,display_name) for a CAV-MAE JSON manifest."
    ),
    manifest_kind: str = typer.Option("auto", help="auto | csv | cavmae | folder"),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    split: list[str] = typer.Option(
        [],
        "--split",
        metavar="NAME",
        help="Also accept this split name in the manifest (repeatable). Known names train/val/test are "
        "matched in any case (validation/dev -> val); any other name is refused unless given here.",
    ),
    dask: str | None = typer.Option(
        None,
        "--dask",
        metavar="SCHEDULER",
        help="Run on a Dask cluster: scheduler address (tcp://host:8786) or local:N (N local worker "
        "processes). One task per chunk; resumable. See docs/gpu-and-scale.md.",
    ),
) -> None:
    from cli.progress import rich_progress
    from featstore.errors import SomeClipsFailed
    from featstore.extract import ExtractConfig, ExtractSummary, extract, extract_dask

    config = ExtractConfig(
        audio_encoder=_encoder_option(audio_encoder),
        video_encoder=_encoder_option(video_encoder),
        audio_weights=audio_weights,
        video_weights=video_weights,
        batch_size=batch_size,
        workers=workers,
        device=device,
        chunk_rows=chunk_rows,
        dtype=dtype,
        compression=compression,
        overwrite=overwrite,
        label_csv=str(label_csv) if label_csv else None,
        manifest_kind=manifest_kind,
        splits=tuple(split),
    )
    summary: ExtractSummary
    with rich_progress(progress) as report:
        if dask:
            summary = extract_dask(manifest, store, config, scheduler=dask, progress=report)
        else:
            summary = extract(manifest, store, config, progress=report)
    if json_out:
        console.print_json(json.dumps(summary.to_json()))
    else:
        console.print(
            f"[bold]{escape(summary.store_path)}[/]: {summary.n_done}/{summary.n_rows} done, "
            f"[red]{summary.n_failed} failed[/], {summary.n_skipped} already done before this run; "
            f"{summary.n_processed} clips in {summary.seconds:.1f} s ({summary.clips_per_s:.1f} clips/s on {summary.device})"
        )
        if summary.audio_missing or summary.video_missing:
            console.print(
                f"no audio stream: {summary.audio_missing} clips; no video stream: {summary.video_missing} clips"
            )
        if summary.failures:
            table = Table("row", "path", "reason", title="failed clips")
            for f in summary.failures[:50]:
                table.add_row(str(f.row), escape(f.path), escape(f.reason))
            console.print(table)
            if len(summary.failures) > 50:
                console.print(f"... and {len(summary.failures) - 50} more")
    if summary.n_failed:
        raise SomeClipsFailed(
            f"{summary.n_failed} of {summary.n_rows} clips failed (listed above; "
            f"`diccae store info {summary.store_path} --failures` lists them again)",
            n_failed=summary.n_failed,
        )


def encoders_command(
    modality: str | None = typer.Option(None, help="Only 'audio' or 'video' encoders."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the registered encoders with their dimension, weights and preprocessing."""
    from dataclasses import asdict

    from featstore.extract import list_encoders

    infos = list_encoders(modality)
    if json_out:
        console.print_json(json.dumps([asdict(i) for i in infos], default=list))
        return
    table = Table("name", "modality", "dim", "default weights", "config", "description")
    for i in infos:
        cfg = ", ".join(f"{k}={v}" for k, v in i.config.items())
        table.add_row(i.name, i.modality, str(i.dim), i.default_weights, cfg, i.description)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("extract", help=EXTRACT_HELP)(extract_command)
    app.command("encoders")(encoders_command)
