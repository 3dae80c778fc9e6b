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
import re
import sys
from pathlib import Path
from typing import Any

import typer

# Typer >= 0.20 vendors its own copy of click, so nothing below uses isinstance()
# against the ``click`` package: commands, groups and parameters are recognised by
# what they have (``list_commands``, ``param_type_name``), which works for both.

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "cli.md"

HEADER = """# Command-line reference

Generated from the Typer app by `python scripts/gen_cli_docs.py`; do not edit by hand
(`tests/cli/test_cli_docs.py` fails when this file is out of date).
Every command shares the [exit codes](#exit-codes) below (the table in `cli/main.py`).
"""


def _clean(text: str | None) -> str:
    """Help text as Markdown: dedented, Typer's rich markup left as plain text."""
    if not text:
        return ""
    text = inspect.cleandoc(text)
    # click's "\b" marker (keep paragraph unwrapped) means nothing in Markdown
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _is_option(param) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def _is_argument(param) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _is_group(cmd) -> bool:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _context(cmd, name: str):
    return cmd.context_class(cmd, info_name=name)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _help_record(param, ctx) -> tuple[str, str]:
    """What ``--help`` shows for one parameter: its declaration and its help line.

    The declaration includes the type (``--k <int>``), the help line the default
    and ``[required]``, exactly as the terminal help prints them.
    """
    rec = param.get_help_record(ctx)
    if rec is None:
        return (param.name or "", getattr(param, "help", "") or "")
    return rec[0], rec[1]


def _usage(cmd, path: list[str]) -> str:
    pieces = [*path, "[OPTIONS]"] if any(_is_option(p) for p in cmd.params) else [*path]
    for p in cmd.params:
        if _is_argument(p):
            name = (p.metavar or p.name or "").upper()
            name = f"{name}..." if p.nargs == -1 else name
            pieces.append(name if p.required else f"[{name}]")
    return " ".join(pieces)


def _command_help(cmd) -> str:
    text = cmd.help
    if not text and getattr(cmd, "callback", None) is not None:
        text = inspect.getdoc(cmd.callback)
    return _clean(text)


def _command_section(cmd, path: list[str], level: int) -> list[str]:
    out = [f"{'#' * level} `{' '.join(path)}`", ""]
    help_text = _command_help(cmd)
    if help_text:
        out += [help_text, ""]
    out += ["```", _usage(cmd, path), "```", ""]
    ctx = _context(cmd, " ".join(path))
    params = [p for p in cmd.params if not getattr(p, "hidden", False) and p.name != "help"]
    for kind, title in ((_is_argument, "Argument"), (_is_option, "Option")):
        chosen = [p for p in params if kind(p)]
        if not chosen:
            continue
        out += [f"| {title} | Description |", "|---|---|"]
        for p in chosen:
            decl, desc = _help_record(p, ctx)
            if kind is _is_argument:
                decl = decl.replace(p.name, (p.metavar or p.name).upper(), 1)
            out.append(f"| `{_cell(decl)}` | {_cell(desc)} |")
        out.append("")
    return out


def _walk(cmd, path: list[str], level: int) -> list[str]:
    if _is_group(cmd):
        out: list[str] = []
        if level > 2:  # a sub-group: its own heading and help
            out += [f"{'#' * level} `{' '.join(path)}`", ""]
            if _command_help(cmd):
                out += [_command_help(cmd), ""]
        ctx = _context(cmd, path[-1])
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            out += _walk(sub, [*path, name], level + 1 if level > 2 else 3)
        return out
    return _command_section(cmd, path, level)


def exit_code_table(doc: str) -> list[str]:
    """The exit-code table of ``cli/main.py``'s docstring (reST) as a Markdown table.

    One source: the docstring beside the code that maps errors to codes.  Rows start
    with the code; indented lines continue the row above.
    """
    rows: list[list[str]] = []
    for line in doc.splitlines():
        m = re.match(r"^(\d+)\s{2,}(.*)$", line)
        if m:
            rows.append([m[1], m[2].strip()])
        elif rows and line.startswith("      ") and line.strip():
            rows[-1][1] += " " + line.strip()
    out = ["## Exit codes", "", "| Code | Meaning |", "|---|---|"]
    for code, text in rows:
        text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", text).replace("``", "`")
        out.append(f"| {code} | {_cell(text)} |")
    return [*out, ""]


def generate(app: typer.Typer | None = None) -> str:
    """The full Markdown text of docs/cli.md for ``app`` (default: ``cli.main.app``)."""
    import cli.main

    if app is None:
        app = cli.main.app
    try:
        root: Any = typer.main.get_command(app)  # a click group, recognised by shape
    except RuntimeError:  # Typer refuses an app without any command
        return HEADER + "\nNo commands are registered.\n"
    lines = [HEADER, "## Commands", ""]
    if _is_group(root):
        ctx = _context(root, "diccae")
        names = [
            n
            for n in root.list_commands(ctx)
            if not getattr(root.get_command(ctx, n), "hidden", False)
        ]
        lines += [f"- [`diccae {n}`](#diccae-{n.replace(' ', '-')})" for n in names]
        lines.append("")
    lines += exit_code_table(cli.main.__doc__ or "")
    lines += _walk(root, ["diccae"], 2)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the file differs from the generated text"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    text = generate()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(
                f"{args.out} is out of date; run: python scripts/gen_cli_docs.py", file=sys.stderr
            )
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
