"""Option parsers and small rendering helpers shared by two or more ``cli/cmd_*.py`` modules.

Private to ``cli`` (the leading underscore): library code never needs them, and a
command module imports what it uses (``from cli._util import parse_names``).  Anyone
may add a function at the end; each one says which commands use it.  A parser turns
an option's text into a value or raises :class:`~featstore.errors.InputError` naming
the option, which ``cli.main`` reports as exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from featstore.errors import InputError

T = TypeVar("T", int, float)


def parse_names(value: str, option: str, what: str = "name") -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; at least one name.

    For ``--features`` of ``audit`` (``what="view"``) and ``--variants`` of ``ablate``.
    """
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise InputError(f"{option} needs at least one {what}, got {value!r}")
    return names


def parse_numbers(value: str, option: str, kind: Callable[[str], T] = int) -> tuple[T, ...]:
    """``"128, 64"`` -> ``(128, 64)`` with ``kind`` int or float; empty items are skipped.

    For the ``--*-widths`` options of ``train`` and ``--sweep-static-weight`` of ``ablate``.
    """
    try:
        return tuple(kind(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        noun = "integers" if kind is int else "numbers"
        raise InputError(f"{option} expects comma-separated {noun}, got {value!r}") from exc


def one_label_source(labels: Path | None, ground_truth: bool) -> None:
    """Refuse both or neither of ``--labels`` and ``--ground-truth`` (``audit``, ``confusion``)."""
    if (labels is None) == (not ground_truth):
        raise InputError("give exactly one of --labels LABELS.npy or --ground-truth")


def progress_wanted(console: Any, *, json_output: bool = False) -> bool:
    """Bars only on a terminal, and never when stdout carries JSON for a program.

    For ``cluster``, ``neighbors``, ``audit`` and ``confusion``: pass the result as
    ``enabled`` to :func:`cli.progress.rich_progress`.
    """
    return bool(console.is_terminal) and not json_output
