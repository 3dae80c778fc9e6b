"""`diccae eval` scores a run only on the store it was trained on (unless --labels maps another)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from relstores import SMALL  # noqa: E402
from trainer_synth import make_store  # noqa: E402

from cli.main import main  # noqa: E402


def test_eval_refuses_a_run_from_another_store(tmp_path, capsys, monkeypatch):
    a = make_store(tmp_path / "a.zarr", n_per_class=12)
    b = make_store(tmp_path / "b.zarr", n_per_class=13)  # other rows: other fingerprint
    run = tmp_path / "run"
    assert main(["train", "finetune", str(a.path), "--out", str(run), "--epochs", "1", *SMALL]) == 0
    capsys.readouterr()
    assert (
        main(["eval", str(run), str(a.path), "--split", "test", "--device", "cpu", "--json"]) == 0
    )
    capsys.readouterr()
    assert main(["eval", str(run), str(b.path), "--split", "test", "--device", "cpu"]) == 3
    err = capsys.readouterr().err
    assert "trained on another store" in err and "Traceback" not in err
    assert not (run / "eval.json").read_text().count(str(b.path))  # nothing rewritten for store b

    # a read-only run folder without --out: one line naming the folder, exit 2
    from featstore.common import fileio

    real_access = fileio.os.access
    monkeypatch.setattr(
        fileio.os,
        "access",
        lambda p, mode, *a, **k: (
            False if (mode & fileio.os.W_OK and Path(p) == run) else real_access(p, mode, *a, **k)
        ),
    )
    assert main(["eval", str(run), str(a.path), "--split", "test", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "permission denied" in err and str(run) in err and "Traceback" not in err
