"""The one look of every long-running command: rich bars fed by library progress updates.

Library functions report :class:`featstore.progress.ProgressUpdate` values; this module
is the only place that draws them.  ``rich_progress()`` gives a callback that keeps one
bar per task key, with done/total, elapsed time, ETA and the task's ``info`` text.

rich allows one live display at a time.  A command that calls several library
functions in a row (``diccae demo``) passes ``while_open=True``: the bars are live only
while one of their tasks is open, so a library function that still draws its own bar
between two tasks does not clash with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from featstore.progress import ProgressFn, ProgressUpdate


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


class RichRenderer:
    """A :data:`~featstore.progress.ProgressFn` drawing one rich bar per task key."""

    def __init__(self, progress: Any):
        self._progress = progress
        self._ids: dict[str, Any] = {}

    def __call__(self, update: ProgressUpdate) -> None:
        from rich.markup import escape

        p = self._progress
        task_id = self._ids.get(update.task)
        if task_id is None:
            task_id = p.add_task(
                escape(update.description or update.task), total=update.total, info=""
            )
            self._ids[update.task] = task_id
        fields: dict[str, Any] = {}
        if update.completed is not None:
            fields["completed"] = update.completed
        if update.total is not None:
            fields["total"] = update.total
        if update.description is not None:
            fields["description"] = escape(update.description)
        if update.info is not None:
            fields["info"] = escape(update.info)
        if fields:
            p.update(task_id, **fields)
        if update.advance:
            p.advance(task_id, update.advance)
        if update.done:
            p.stop_task(task_id)


def _bars(console: Any, transient: bool) -> Any:
    from rich.console import Console
    from rich.progress import TextColumn

    return make_progress(
        TextColumn("{task.fields[info]}"),
        console=console or Console(stderr=True),
        transient=transient,
    )


class LiveWhileOpen:
    """A :data:`~featstore.progress.ProgressFn` whose bars are live only while a task is open.

    The first update of a new task starts a display; when every task it shows is
    done, the display stops (finished bars stay printed unless ``transient``).
    """

    def __init__(self, console: Any = None, transient: bool = False):
        self._console = console
        self._transient = transient
        self._progress: Any = None
        self._renderer: RichRenderer | None = None
        self._open: set[str] = set()

    def __call__(self, update: ProgressUpdate) -> None:
        if self._progress is None:
            self._progress = _bars(self._console, self._transient)
            self._progress.start()
            self._renderer = RichRenderer(self._progress)
        assert self._renderer is not None
        self._renderer(update)
        if update.done:
            self._open.discard(update.task)
            if not self._open:
                self.close()
        else:
            self._open.add(update.task)

    def close(self) -> None:
        """Stop the display (a no-op when none is live)."""
        if self._progress is not None:
            self._progress.stop()
        self._progress = self._renderer = None
        self._open.clear()


@contextmanager
def rich_progress(
    enabled: bool = True,
    *,
    transient: bool = False,
    console: Any = None,
    while_open: bool = False,
) -> Iterator[ProgressFn | None]:
    """Yield a progress callback drawing to stderr (or ``console``), or ``None`` when disabled.

    ``None`` lets library code skip even building updates.  ``while_open``: keep the
    display live only while a task is open (see :class:`LiveWhileOpen`).
    """
    if not enabled:
        yield None
        return
    if while_open:
        live = LiveWhileOpen(console, transient)
        try:
            yield live
        finally:
            live.close()
        return
    with _bars(console, transient) as progress:
        yield RichRenderer(progress)
