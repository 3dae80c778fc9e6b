"""One look for every long-running step: a rich progress bar with rate and ETA."""

from __future__ import annotations

from typing import Any


def make_progress(
    *extra_columns: Any, console: Any = None, transient: bool = False, disable: bool = False
) -> Any:
    """A ``rich.progress.Progress`` with description, bar, done/total, elapsed and ETA.

    ``extra_columns`` (e.g. a ``TextColumn`` showing clips/s or failures so far) go
    between the count and the times.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=disable,
    )
