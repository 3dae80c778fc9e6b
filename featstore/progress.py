"""Progress as data: library code reports, the CLI renders.

Long-running library functions take ``progress: ProgressFn | None`` and call it with
:class:`ProgressUpdate` values.  They never import rich; ``cli/progress.py`` turns the
updates into bars (one bar per ``task`` key), a notebook can print them, a test can
collect them.  Passing ``None`` costs nothing.

A task is opened by its first update that carries ``total`` (``None`` total means an
open-ended count), moved by ``advance`` or ``completed``, annotated by ``info`` (a
short text shown beside the bar: rate, failures so far, the last inertia) and closed
by ``done=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgressUpdate:
    """One step of one named task."""

    task: str
    completed: float | None = None  # absolute count, or None to leave it
    total: float | None = None  # size of the task, or None if unknown/unchanged
    advance: float = 0.0  # relative step, added after ``completed``
    description: str | None = None  # human label; defaults to ``task``
    info: str | None = None  # short text beside the bar
    done: bool = False  # the task is finished


ProgressFn = Callable[[ProgressUpdate], None]


class ProgressTask:
    """Convenience for library code: one task reported through an optional callback.

    >>> bar = ProgressTask(progress, "clips", total=len(rows), description="extract")
    >>> bar.advance(16, info="12.5 clips/s"); bar.close()
    """

    def __init__(
        self,
        progress: ProgressFn | None,
        task: str,
        *,
        total: float | None,
        description: str | None = None,
        info: str | None = None,
    ):
        self._fn = progress
        self.task = task
        self.completed = 0.0
        self._send(ProgressUpdate(task, 0.0, total, 0.0, description or task, info))

    def _send(self, update: ProgressUpdate) -> None:
        if self._fn is not None:
            self._fn(update)

    def advance(self, n: float = 1, *, info: str | None = None) -> None:
        self.completed += n
        self._send(ProgressUpdate(self.task, advance=n, info=info))

    def update(self, **fields: Any) -> None:
        """Send any :class:`ProgressUpdate` field (``completed``, ``total``, ``info``...)."""
        if fields.get("completed") is not None:
            self.completed = float(fields["completed"])
        self._send(ProgressUpdate(self.task, **fields))

    def close(self, *, info: str | None = None) -> None:
        self._send(ProgressUpdate(self.task, info=info, done=True))

    def __enter__(self) -> ProgressTask:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
