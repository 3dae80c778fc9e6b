"""docs/cli.md is generated from the Typer app and must match it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_cli_md_is_current():
    text = _generator().generate()
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == text, (
        "docs/cli.md is stale: run `python scripts/gen_cli_docs.py` and commit it"
    )


def test_every_registered_command_is_documented():
    from cli.main import app

    text = _generator().generate()
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="diccae")
    for name in root.list_commands(ctx):
        assert f"`diccae {name}`" in text
        cmd = root.get_command(ctx, name)
        for p in cmd.params:
            for opt in getattr(p, "opts", []):
                if (
                    opt.startswith("--")
                    and opt != "--help"
                    and p.param_type_name == "option"
                    and not p.hidden
                ):
                    assert f"`{opt}" in text, f"{name}: option {opt} missing from docs/cli.md"


def test_generator_renders_groups_options_and_defaults():
    app = typer.Typer()
    sub = typer.Typer(help="Things about stores.")

    @app.command("run")
    def run(
        path: Path = typer.Argument(..., help="Where it goes."),
        k: int = typer.Option(300, "--k", help="Number of clusters."),
        mode: str = typer.Option("fast", "--mode", help="fast | slow"),
        flag: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Run the thing.

        Second paragraph of help.
        """

    @sub.command("info")
    def info(store: Path = typer.Argument(..., help="A store.")) -> None:
        """Describe a store."""

    app.add_typer(sub, name="store")
    text = _generator().generate(app)
    assert "### `diccae run`" in text
    assert "Second paragraph of help." in text
    assert "| `--k <int>` | Number of clusters. [default: 300] |" in text
    assert "| `--json` | Print JSON. |" in text
    assert "| `--mode <str>` | fast \\| slow [default: fast] |" in text
    assert "diccae run [OPTIONS] PATH" in text
    assert "| `PATH <path>` | Where it goes. [required] |" in text
    assert "### `diccae store`" in text and "#### `diccae store info`" in text
    assert "Things about stores." in text
    # stable: the same app gives the same bytes
    assert _generator().generate(app) == text
