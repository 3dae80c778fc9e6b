"""Entry point of the ``diccae`` command.

Each ``cli/cmd_*.py`` module defines ``register(app)`` and adds its commands; a
command parses options and calls a plain function from ``featstore``/``trainer``/
``demo``.  :data:`REGISTER` lists them explicitly, in the order ``--help``
shows them: reading this file tells you every command there is, and a module that
fails to import is an error here, not a command that silently disappears.

Only this layer turns :class:`~featstore.errors.DiccaeError` into exit codes; each
error class carries its code (``exit_code``), so a new error needs no edit here:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     a diccae error not covered below
2     bad input (manifest, option, label file)
3     store or checkpoint missing, damaged or of another configuration
4     pretrained weights unavailable (see the message for how to supply them)
5     requested backend/device unavailable (GPU, cuML, Dask ...)
6     the run finished but some clips failed (``extract``, ``store import-h5``):
      :class:`~featstore.errors.SomeClipsFailed`, raised after the summary
7     training diverged (non-finite loss or weights): checkpoints written
      before it are kept (:class:`~featstore.errors.TrainingDiverged`)
130   interrupted (Ctrl-C); finished work is kept and a rerun resumes
====  =====================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

from cli import (
    cmd_audit,
    cmd_cluster,
    cmd_confusion,
    cmd_demo,
    cmd_extract,
    cmd_map,
    cmd_neighbors,
    cmd_store,
    cmd_train,
)
from featstore.errors import DiccaeError, output_error

#: every command module's ``register``, in the order ``diccae --help`` lists the commands
REGISTER: tuple[Callable[[typer.Typer], None], ...] = (
    cmd_audit.register,
    cmd_cluster.register,
    cmd_confusion.register,
    cmd_demo.register,
    cmd_extract.register,
    cmd_map.register,
    cmd_neighbors.register,
    cmd_store.register,
    cmd_train.register,
)

app = typer.Typer(
    name="diccae",
    help="Feature store and confusion-aware audio-visual trainer (DICCAE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted; finished work is kept, rerun the command to resume"


for _register in REGISTER:
    _register(app)


def _is_usage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of click's user-facing errors (bad option, unknown command ...).

    Detected by click's contract -- an integer ``exit_code`` and a ``show()`` method --
    rather than by ``isinstance(exc, click.ClickException)``: typer 0.29 bundles its own
    copy of click (``typer._click``), whose exceptions are not the installed ``click``'s,
    and a check tied to one import path let them escape as tracebacks.
    """
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "show", None))


def _class_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _usage_message(exc: BaseException) -> str:
    """One line: click's message for the error, then where to get help."""
    fmt = getattr(exc, "format_message", None)
    text = fmt() if callable(fmt) else str(exc)
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) if ctx is not None else None
    if path:
        text += f" (see '{path} --help')"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the app, mapping library errors to exit codes and one-line messages."""
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns typer.Exit codes here
    except DiccaeError as exc:
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return exc.exit_code
    except OSError as exc:  # an output location problem (disk full, unwritable) no layer typed
        typed = output_error(exc)
        if typed is None:
            raise
        err_console.print(
            f"[bold red]error:[/] {escape(str(typed))}", highlight=False, soft_wrap=True
        )
        return typed.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:  # an interactive prompt was cancelled (EOF)
        err_console.print("aborted")
        return 1
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:  # outside a command body (typer maps those to Exit(130))
        err_console.print(INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        if "NoArgsIsHelpError" in _class_names(exc):
            exc.show()  # type: ignore[attr-defined]  # prints the command's help
        else:
            err_console.print(
                f"[bold red]error:[/] {escape(_usage_message(exc))}",
                highlight=False,
                soft_wrap=True,
            )
        return exc.exit_code  # type: ignore[attr-defined]
    if rc == EXIT_INTERRUPTED:  # typer turned Ctrl-C in a command into Exit(130), silently
        err_console.print(INTERRUPTED)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
