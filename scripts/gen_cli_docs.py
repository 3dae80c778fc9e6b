#!/usr/bin/env python
"""Generate docs/cli.md from the Typer app, so the CLI reference cannot drift.

Walks ``cli.main.app`` through ``typer.main.get_command`` (a click group) and writes
every command with its arguments and options as Markdown.  The output depends only
on the declared parameters, never on the terminal width, so it is byte-stable and
``tests/cli/test_cli_docs.py`` can compare it with the committed file.

    python scripts/gen_cli_docs.py            # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check    # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import click
import typer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "cli.md"

HEADER = """# Command-line reference

Generated from the Typer app by `python scripts/gen_cli_docs.py`; do not edit by hand
(`tests/cli/test_cli_docs.py` fails when this file is out of date).

Exit codes are listed in [architecture.md](architecture.md#exit-codes) and in
`cli/main.py`.
"""


def _clean(text: str | None) -> str:
    """Help text as Markdown: dedented, Typer's rich markup left as plain text."""
    if not text:
        return ""
    text = inspect.cleandoc(text)
    # click's "\b" marker (keep paragraph unwrapped) means nothing in Markdown
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _one_line(text: str | None) -> str:
    return " ".join(_clean(text).split()).replace("|", "\\|")


def _type_name(param: click.Parameter) -> str:
    t = param.type
    if isinstance(t, click.Choice):
        return " \\| ".join(f"`{c}`" for c in t.choices)
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    name = getattr(t, "name", None) or type(t).__name__
    return name.lower()


def _default(param: click.Parameter) -> str:
    if isinstance(param, click.Option) and isinstance(param.show_default, str):
        return param.show_default
    default = param.default
    if callable(default):
        return "(computed)"
    if default is None or default == () or (isinstance(param, click.Option) and param.is_flag and default is False):
        return ""
    if isinstance(default, (list, tuple)):
        return ", ".join(str(d) for d in default)
    if hasattr(default, "value"):  # enums
        default = default.value
    return str(default)


def _option_names(param: click.Option) -> str:
    names = [*param.opts]
    if param.secondary_opts:
        names += param.secondary_opts
    return ", ".join(f"`{n}`" for n in names)


def _usage(cmd: click.Command, path: list[str]) -> str:
    ctx = click.Context(cmd, info_name=" ".join(path))
    pieces = cmd.collect_usage_pieces(ctx)
    return " ".join([*path, *pieces])


def _command_section(cmd: click.Command, path: list[str], level: int) -> list[str]:
    out = [f"{'#' * level} `{' '.join(path)}`", ""]
    help_text = _clean(cmd.help)
    if help_text:
        out += [help_text, ""]
    out += ["```", _usage(cmd, path), "```", ""]
    params = [p for p in cmd.params if not getattr(p, "hidden", False) and p.name != "help"]
    args = [p for p in params if isinstance(p, click.Argument)]
    opts = [p for p in params if isinstance(p, click.Option)]
    if args:
        out += ["| Argument | Type | Required | Help |", "|---|---|---|---|"]
        for a in args:
            out.append(f"| `{a.human_readable_name}` | {_type_name(a)} | {'yes' if a.required else 'no'} | {_one_line(getattr(a, 'help', ''))} |")
        out.append("")
    if opts:
        out += ["| Option | Type | Default | Help |", "|---|---|---|---|"]
        for o in opts:
            req = " (required)" if o.required else ""
            out.append(f"| {_option_names(o)} | {_type_name(o)}{req} | {_default(o)} | {_one_line(o.help)} |")
        out.append("")
    return out


def _walk(cmd: click.Command, path: list[str], level: int) -> list[str]:
    if isinstance(cmd, click.Group):
        out: list[str] = []
        if level > 2:  # a sub-group: its own heading and help
            out += [f"{'#' * level} `{' '.join(path)}`", ""]
            if _clean(cmd.help):
                out += [_clean(cmd.help), ""]
        ctx = click.Context(cmd, info_name=path[-1])
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            out += _walk(sub, [*path, name], level + 1 if level > 2 else 3)
        return out
    return _command_section(cmd, path, level)


def generate(app: typer.Typer | None = None) -> str:
    """The full Markdown text of docs/cli.md for ``app`` (default: ``cli.main.app``)."""
    if app is None:
        from cli.main import app as main_app

        app = main_app
    try:
        root = typer.main.get_command(app)
    except RuntimeError:  # Typer refuses an app without any command
        return HEADER + "\nNo commands are registered.\n"
    lines = [HEADER, "## Commands", ""]
    if isinstance(root, click.Group):
        ctx = click.Context(root, info_name="diccae")
        names = [n for n in root.list_commands(ctx) if not getattr(root.get_command(ctx, n), "hidden", False)]
        lines += [f"- [`diccae {n}`](#diccae-{n.replace(' ', '-')})" for n in names]
        lines.append("")
    lines += _walk(root, ["diccae"], 2)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from the generated text")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    text = generate()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date; run: python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
