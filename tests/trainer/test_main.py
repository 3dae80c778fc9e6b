"""``python -m trainer``: the torchrun worker parses the ``diccae train`` options itself
and calls the phases (no CLI import); errors are one line and their exit code."""

from __future__ import annotations

import subprocess
import sys

from trainer.__main__ import parser, run
from trainer.options import TRAIN_OPTIONS
from trainer.run_io import read_metrics

SMALL = [
    "--epochs", "2", "--encoder-widths", "32", "--fusion-widths", "32", "--encoded-dim", "16",
    "--fused-dim", "16", "--projection-dim", "8", "--batch-size", "16", "--shuffle-buffer", "64",
    "--threads", "1", "--no-plots", "--device", "cpu",
]  # fmt: skip


def test_python_m_trainer_takes_every_train_option():
    for phase in ("pretrain", "finetune"):
        flags = {s for a in parser(phase)._actions for s in a.option_strings}
        for name, *_ in TRAIN_OPTIONS:
            assert f"--{name.replace('_', '-')}" in flags, (phase, name)
        assert {"--out", "--labels", "--resume", "--preset", "--config", "--no-progress"} <= flags


def test_python_m_trainer_runs_a_phase_in_process(tmp_path, small_store, capsys):
    out = tmp_path / "fine"
    rc = run(["finetune", str(small_store.path), "--out", str(out), *SMALL, "--dropout", "0.2"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "finetune epochs: 2/2" in captured.err  # plain progress lines, no terminal control
    assert f"run written to {out}" in captured.out
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    import json

    assert json.loads((out / "config.json").read_text())["model"]["dropout"] == 0.2


def test_python_m_trainer_errors_are_one_line_with_their_exit_code(tmp_path, capsys):
    assert run(["pretrain", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "r")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert run(["finetune", str(tmp_path), "--epochs", "x"]) == 2  # InputError from the option
    assert run(["finetune", "--no-such-option"]) == 2  # argparse usage error


def test_python_m_trainer_does_not_import_the_cli():
    code = "import sys, trainer.__main__; sys.exit('cli' in sys.modules or 'rich' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
