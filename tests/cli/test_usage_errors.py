"""Usage errors exit 2 with one short line and no traceback, for every command.

The commands are discovered from the Typer app, so a new command is covered
without editing this file. Each case fails while click parses the command line,
so no command body runs. The checks go through :func:`cli.main.main`, the real
entry point, and hold whether typer uses the installed ``click`` (typer < 0.29)
or its bundled copy (typer >= 0.29).
"""

from __future__ import annotations

import inspect

import pytest
import typer

import cli.main as cli_main
from cli.main import app, main

ROOT = typer.main.get_command(app)


def _walk(cmd, path, parent):
    """(path, click command, is_group) for every command and group under ``cmd``."""
    ctx = cmd.context_class(cmd, info_name=path[-1] if path else "diccae", parent=parent)
    if hasattr(cmd, "list_commands"):
        yield path, cmd, True
        for name in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, name), [*path, name], ctx)
    else:
        yield path, cmd, False


ENTRIES = list(_walk(ROOT, [], None))
GROUPS = [p for p, _, g in ENTRIES if g]
COMMANDS = [(p, c) for p, c, g in ENTRIES if not g]


def _declared(cmd) -> dict[str, inspect.Parameter]:
    """The command function's parameters as declared with ``typer.Option`` (type, min, max)."""
    return dict(inspect.signature(cmd.callback).parameters)


def _value_options(cmd):
    """(option string, declared parameter) for every option that takes a value."""
    decl = _declared(cmd)
    for p in cmd.params:
        if p.param_type_name != "option" or p.is_flag or getattr(p, "count", False) or p.hidden:
            continue
        long = [o for o in p.opts if o.startswith("--")]
        if long and p.name in decl:
            yield long[0], decl[p.name]


def _base_type(param: inspect.Parameter) -> str:
    ann = param.annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    return text.replace("Optional[", "").replace(" | None", "").rstrip("]").strip()


def _id(path):
    return " ".join(path) or "diccae"


def _check_one_line(capsys, rc, *must_mention):
    out, err = capsys.readouterr()
    assert rc == 2, f"exit {rc}, stderr: {err!r}"
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert len(lines[0]) < 300
    assert lines[0].startswith("error: ")
    for word in must_mention:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def test_every_command_module_is_registered():
    """cli/main.py lists the modules by hand: a new cmd_*.py must be added there."""
    from pathlib import Path

    files = {p.stem for p in Path(cli_main.__file__).parent.glob("cmd_*.py")}
    listed = [f.__module__.rpartition(".")[2] for f in cli_main.REGISTER]
    assert sorted(listed) == sorted(files) and len(set(listed)) == len(listed)


def test_discovery_finds_the_commands():
    paths = {_id(p) for p, _ in COMMANDS}
    # A sanity floor, not the list: the cases below run for whatever is registered.
    assert {"cluster", "labels info", "store info", "train pretrain", "train finetune"} <= paths
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("path", GROUPS, ids=_id)
def test_unknown_command_in_every_group(path, capsys):
    _check_one_line(capsys, main([*path, "no-such-command"]), "no-such-command")


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[_id(p) for p, _ in COMMANDS])
def test_unknown_option(path, cmd, capsys):
    _check_one_line(capsys, main([*path, "--no-such-option"]), "--no-such-option")


def _flags(cmd):
    for p in cmd.params:
        if p.param_type_name == "option" and p.is_flag and not p.hidden:
            yield from (o for o in [*p.opts, *p.secondary_opts] if o.startswith("--"))


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[_id(p) for p, _ in COMMANDS])
def test_missing_and_bad_option_values(path, cmd, capsys):
    checks = 0
    for opt, decl in _value_options(cmd):
        # the option given last, with no value
        _check_one_line(capsys, main([*path, opt]), opt)
        checks += 1
        if _base_type(decl) in ("int", "float"):
            _check_one_line(capsys, main([*path, opt, "abc"]), opt)
        info = decl.default
        lo, hi = getattr(info, "min", None), getattr(info, "max", None)
        if lo is not None:
            _check_one_line(capsys, main([*path, opt, str(lo - 1)]), opt)
        if hi is not None:
            _check_one_line(capsys, main([*path, opt, str(hi + 1)]), opt)
    for flag in _flags(cmd):
        # a flag given a value
        _check_one_line(capsys, main([*path, f"{flag}=abc"]), flag)
        checks += 1
    assert checks, f"{_id(path)}: no option found to give a bad value"


NEED_ARGUMENT = [
    (p, c)
    for p, c in COMMANDS
    if any(q.param_type_name == "argument" and q.required for q in c.params)
]


@pytest.mark.parametrize("path,cmd", NEED_ARGUMENT, ids=[_id(p) for p, _ in NEED_ARGUMENT])
def test_missing_argument(path, cmd, capsys):
    _check_one_line(capsys, main(list(path)), "Missing")


def test_numeric_options_are_found():
    """The bad-value case above really exercises typed options (guards the discovery)."""
    kinds = [_base_type(d) for _, c in COMMANDS for _, d in _value_options(c)]
    assert kinds.count("int") >= 5 and kinds.count("float") >= 1, kinds


def test_bare_group_shows_help_without_traceback(capsys):
    rc = main([])
    out, err = capsys.readouterr()
    assert rc in (0, 2)  # click < 8.2 exits 0 after no_args_is_help, later versions 2
    assert "Usage" in out + err and "Traceback" not in out + err


class _ForeignUsageError(Exception):
    """A usage error from a click copy we have never imported: only the contract is shared."""

    exit_code = 2

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def format_message(self):
        return self.message

    def show(self, file=None):  # pragma: no cover - main prints its own line
        raise AssertionError("main should print one line, not click's multi-line show()")


def test_detects_usage_errors_by_contract_not_import_path(monkeypatch, capsys):
    def fake_app(*args, **kwargs):
        raise _ForeignUsageError(
            "Invalid value for '--k': 'abc' is not a valid integer.\nsecond line"
        )

    monkeypatch.setattr(cli_main, "app", fake_app)
    _check_one_line(capsys, main(["cluster", "x", "--k", "abc"]), "--k", "second line")


def test_other_exceptions_still_raise(monkeypatch):
    class NotUsage(Exception):
        exit_code = 2  # no show(): not click's contract

    def fake_app(*args, **kwargs):
        raise NotUsage("bug")

    monkeypatch.setattr(cli_main, "app", fake_app)
    with pytest.raises(NotUsage):
        main(["anything"])
