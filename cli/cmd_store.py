"""``diccae store ...``: look into a store, and move embeddings in and out as HDF5."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

STORE_HELP = "Inspect a feature store; import/export embeddings as HDF5."


def info(
    store: Path = typer.Argument(..., help="Store directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (for scripts)."),
    failures: bool = typer.Option(
        False, "--failures", help="Also list every failed clip with its reason."
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Also run the full integrity pass of `diccae store verify` (exit 3 if damaged).",
    ),
) -> None:
    """Rows done/failed/pending, encoders and weights, dtype, chunking, size, classes."""
    from cli.render_store import render_store_info
    from featstore.store.info import store_info

    summary = store_info(store, failures=failures)
    report = None
    if verify:
        from featstore.store.core import FeatureStore
        from featstore.store.integrity import verify_store

        report = verify_store(FeatureStore.open(store))
        summary["integrity"] = report
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        render_store_info(summary, Console())
    if report is not None:
        _finish_verify(store, report, print_ok=not as_json)


def _finish_verify(store: Path, report: dict, *, print_ok: bool) -> None:
    from featstore.errors import StoreDamaged

    console = Console(stderr=True, highlight=False)
    if report["ok"]:
        if print_ok:
            Console(highlight=False).print(
                escape(
                    f"verified {store}: {report['chunks']} chunks, {report['bytes'] / 1e6:.3g} MB "
                    f"in {report['seconds']:.2f} s; no problems"
                )
            )
        return
    for problem in report["problems"]:
        console.print(escape(f"  - {problem}"), soft_wrap=True)
    raise StoreDamaged(f"{store}: {len(report['problems'])} integrity problem(s), listed above")


def verify_cmd(
    store: Path = typer.Argument(..., help="Store directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (for scripts)."),
) -> None:
    """Check every done row's chunks exist, decode and match their checksums, and that the
    attributes were not edited; exit 3 naming each problem.  About one plain read of the store."""
    from featstore.errors import StoreDamaged
    from featstore.store.core import FeatureStore
    from featstore.store.integrity import verify_store

    try:
        opened = FeatureStore.open(store)
    except StoreDamaged as exc:  # structural damage: the report is that one message
        if as_json:
            typer.echo(json.dumps({"ok": False, "problems": [str(exc)]}, indent=2))
        raise
    report = verify_store(opened)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    _finish_verify(store, report, print_ok=not as_json)


def import_h5_cmd(
    h5: Path = typer.Argument(
        ...,
        help="HDF5 file holding the datasets (unless --audio-file/--video-file or FILE:DATASET say otherwise).",
    ),
    store: Path = typer.Argument(..., help="Store directory to create."),
    audio_dataset: str = typer.Option(
        ...,
        "--audio-dataset",
        help="Audio embeddings, (N, D) or (N, T, D) mean-pooled over T; DATASET or FILE:DATASET.",
    ),
    video_dataset: str = typer.Option(
        ...,
        "--video-dataset",
        help="Video embeddings, (N, D) or (N, T, D); DATASET or FILE:DATASET.",
    ),
    audio_file: Path = typer.Option(
        None, "--audio-file", help="Read --audio-dataset from this file (AVE: audio_feature.h5)."
    ),
    video_file: Path = typer.Option(
        None, "--video-file", help="Read --video-dataset from this file (AVE: visual_feature.h5)."
    ),
    labels_dataset: str = typer.Option(
        None,
        "--labels-dataset",
        help="Labels: (N,) ints, (N, C) one-hot or (N, T, C) per-segment one-hot.",
    ),
    split_dataset: str = typer.Option(None, "--split-dataset", help="(N,) split names."),
    ids_dataset: str = typer.Option(
        None, "--ids-dataset", help="(N,) unique clip ids (default: row numbers)."
    ),
    class_names_dataset: str = typer.Option(
        None, "--class-names-dataset", help="(C,) class names."
    ),
    dtype: str = typer.Option(
        None, "--dtype", help="float16 | float32 (default: the source's, float32 if it is neither)."
    ),
    chunk_rows: int = typer.Option(1024, "--chunk-rows", min=1, help="Rows per store chunk."),
    compression: str = typer.Option(
        "zstd", "--compression", help="zstd (smaller) | none (faster full passes)."
    ),
    on_nonfinite: str = typer.Option(
        "fail",
        "--on-nonfinite",
        help="fail: refuse NaN/Inf rows (nothing written); skip: mark them failed.",
    ),
    pretrained: bool = typer.Option(
        False,
        "--pretrained",
        help="Record the embeddings as coming from trained (not random) weights.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Create a store from precomputed embeddings in HDF5 (e.g. AVE's feature files)."""
    from cli.progress import rich_progress
    from featstore.store.h5import import import_h5

    with rich_progress(progress) as report:
        s = import_h5(
            h5,
            store,
            audio_dataset=audio_dataset,
            video_dataset=video_dataset,
            audio_file=audio_file,
            video_file=video_file,
            labels_dataset=labels_dataset,
            split_dataset=split_dataset,
            ids_dataset=ids_dataset,
            class_names_dataset=class_names_dataset,
            dtype=dtype,
            chunk_rows=chunk_rows,
            compression=compression,
            on_nonfinite=on_nonfinite,
            pretrained=pretrained,
            overwrite=overwrite,
            progress=report,
        )
    counts = s.counts()
    console = Console()
    console.print(
        f"imported {counts['done']} rows into {escape(str(store))} ({s.dtype}, audio dim {s.modalities['audio'].dim}, "
        f"video dim {s.modalities['video'].dim})"
    )
    if counts["failed"]:
        from featstore.errors import SomeClipsFailed

        console.print(
            f"[yellow]{counts['failed']} rows marked failed[/] (see `diccae store info {escape(str(store))} --failures`)"
        )
        raise SomeClipsFailed(
            f"{counts['failed']} of {s.n_rows} rows of {store} were marked failed",
            n_failed=counts["failed"],
        )


def export_h5_cmd(
    store: Path = typer.Argument(..., help="Store directory."),
    h5: Path = typer.Argument(..., help="HDF5 file to write."),
    include_missing: bool = typer.Option(
        False,
        "--include-missing",
        help="Write every row (status/missing datasets say which hold data), not only complete ones.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write embeddings, labels, splits, ids and status to one HDF5 file."""
    from cli.progress import rich_progress
    from featstore.store.h5export import export_h5

    with rich_progress(progress) as report:
        summary = export_h5(
            store, h5, include_missing=include_missing, overwrite=overwrite, progress=report
        )
    Console().print(escape(f"wrote {summary['rows']} of {summary['store_rows']} rows to {h5}"))


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(name="store", help=STORE_HELP, no_args_is_help=True)
    store_app.command("info")(info)
    store_app.command("verify")(verify_cmd)
    store_app.command("import-h5")(import_h5_cmd)
    store_app.command("export-h5")(export_h5_cmd)
    app.add_typer(store_app, name="store")
