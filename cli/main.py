"""Entry point of the ``diccae`` command.

Each ``cli/cmd_*.py`` module defines ``register(app)`` and adds its commands; a
command parses options and calls a plain function from ``featstore``/``trainer``.
Only this layer turns :class:`~featstore.errors.DiccaeError` into exit codes:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     a diccae error not covered below
2     bad input (manifest, option, label file)
3     store or checkpoint missing, damaged or of another configuration
4     pretrained weights unavailable (see the message for how to supply them)
5     requested backend/device unavailable (GPU, cuML, Dask ...)
6     the run finished but some clips failed (``diccae extract``)
====  =====================================================================
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console
from rich.markup import escape

import cli
from featstore.errors import DiccaeError, output_error

EXIT_SOME_FAILED = 6

app = typer.Typer(
    name="diccae",
    help="Feature store and confusion-aware audio-visual trainer (DICCAE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(cli.__path__), key=lambda m: m.name):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"cli.{mod.name}").register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the app, mapping library errors to exit codes and one-line messages."""
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns typer.Exit codes here
    except DiccaeError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except OSError as exc:  # an output location problem (disk full, unwritable) no layer typed
        typed = output_error(exc)
        if typed is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(typed))}", highlight=False, soft_wrap=True)
        return typed.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click usage errors under standalone_mode=False
        return int(exc.code or 0)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is kept, rerun the command to resume")
        return 130
    except Exception as exc:  # click.exceptions.UsageError and friends
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
