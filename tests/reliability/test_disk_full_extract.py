"""Disk full in the middle of `extract`: exit 1 with one line, finished chunks kept, rerun completes."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "featstore"))
from clipfactory import make_clip  # noqa: E402

from cli.main import main  # noqa: E402
from featstore.store import FeatureStore  # noqa: E402
from featstore.store.integrity import verify_store  # noqa: E402

E = [
    "--audio-encoder",
    "kaldi-fbank",
    "--video-encoder",
    "frame-stats",
    "--chunk-rows",
    "4",
    "--no-progress",
    "--workers",
    "0",
]


def test_enospc_mid_extract_keeps_done_chunks_and_resumes(tmp_path, capsys, monkeypatch):
    rows = ["path,label,split"]
    for i in range(8):
        make_clip(tmp_path / f"c{i}.mp4", seed=i)
        rows.append(f"c{i}.mp4,{'ab'[i % 2]},train")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    store = tmp_path / "s.zarr"
    real = FeatureStore.write_rows
    calls = []

    def full_on_second(self, start, **kw):
        calls.append(start)
        if len(calls) == 2:
            raise OSError(
                errno.ENOSPC, "No space left on device", str(store / "audio" / "c" / "1" / "0")
            )
        return real(self, start, **kw)

    monkeypatch.setattr(FeatureStore, "write_rows", full_on_second)
    rc = main(["extract", str(tmp_path / "m.csv"), str(store), *E])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "no space left" in err and "\n" not in err and "Traceback" not in err
    assert FeatureStore.open(store).counts() == {"done": 4, "failed": 0, "pending": 4}
    monkeypatch.setattr(FeatureStore, "write_rows", real)
    assert main(["extract", str(tmp_path / "m.csv"), str(store), *E, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_skipped"] == 4
    assert verify_store(FeatureStore.open(store))["ok"]
