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
``report.json`` (the same numbers for programs).  Nothing here prints: stage starts
and ends, and the clip-generation bar, are :class:`~featstore.progress.ProgressUpdate`
values sent to ``progress``; ``diccae demo`` (``cli/cmd_demo.py``) draws them.

Layout of the package: :mod:`demo.data` (the generated clips and their class
design), :mod:`demo.media` (the MP4 writer), :mod:`demo.settings` (settings and the
run's shared state), :mod:`demo.stages` (one function per stage),
:mod:`demo.report` (``report.md``) and this module (the driver).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from demo.report import write_report
from demo.settings import DemoReport, DemoRun, DemoSettings
from demo.stages import STAGES
from featstore.errors import InputError
from featstore.progress import ProgressFn, ProgressUpdate

__all__ = ["STAGE_TASK", "DemoReport", "DemoSettings", "prepare_out", "run_demo"]

MARKER = "report.json"
#: written first, so a demo interrupted before its report is still recognised as ours
STARTED = ".diccae-demo"
OWNED = ("data", "store.zarr", "labels", "confusion", "runs", "ablation", "report.md", MARKER)
#: the progress task that reports stages: a description ``demo i/N: name`` when stage i
#: starts, ``advance=1`` with ``info`` ``name: seconds`` when it ends
STAGE_TASK = "demo"


def prepare_out(out: Path) -> None:
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


def run_demo(
    out_dir: str | Path,
    *,
    settings: DemoSettings | None = None,
    quick: bool = False,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> DemoReport:
    """Run every stage into ``out_dir`` and write ``report.md``/``report.json`` there.

    ``overrides`` are :class:`DemoSettings` fields (``n_clips=``, ``seed=``,
    ``pretrain_epochs=`` ...).  Stages stop at the first error, which propagates as
    the library raised it (the CLI maps it to an exit code); whatever finished is
    kept in ``out_dir``.  ``progress`` receives the stage updates (task
    :data:`STAGE_TASK`) and is handed to the stages; ``None`` runs silently.
    """
    settings = (settings or (DemoSettings.quick() if quick else DemoSettings())).with_overrides(
        **overrides
    )
    out = Path(out_dir)
    prepare_out(out)
    run = DemoRun(out, settings, progress)
    report = progress or (lambda update: None)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    n = len(STAGES)
    for i, (name, fn) in enumerate(STAGES, 1):
        report(ProgressUpdate(STAGE_TASK, i - 1, n, description=f"demo {i}/{n}: {name}"))
        t0 = time.perf_counter()
        fn(run)
        seconds[name] = time.perf_counter() - t0
        report(
            ProgressUpdate(
                STAGE_TASK, advance=1, info=f"{name}: {seconds[name]:.1f} s", done=i == n
            )
        )
    total = time.perf_counter() - t_all
    run.numbers["seconds"] = {**seconds, "total": total}
    run.numbers["settings"] = asdict(settings)
    (out / MARKER).write_text(json.dumps(run.numbers, indent=2, default=str))
    report_path = write_report(run)
    return DemoReport(out, report_path, run.numbers, seconds, total)
