"""Checkpoints: tensor digest checked at load, pickles refused as unsafe, eval bound to its store."""

from __future__ import annotations

import pickle

import pytest
import torch

from featstore.errors import CheckpointError
from trainer.run_io import load_checkpoint, save_checkpoint


def _state():
    g = torch.Generator().manual_seed(0)
    return {"model": {"w": torch.randn(64, 32, generator=g), "b": torch.zeros(32)}, "epoch": 3}


def test_flipped_bytes_inside_a_tensor_are_detected(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    assert load_checkpoint(path)["epoch"] == 3
    raw = bytearray(path.read_bytes())
    w = _state()["model"]["w"].numpy().tobytes()
    at = bytes(raw).find(w[:64])
    assert at > 0
    for i in range(32):  # 32 flipped bytes inside the weight tensor
        raw[at + 100 + i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="do not match the digest"):
        load_checkpoint(path)


def test_pickled_object_is_refused_as_not_a_safe_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "x", "obj": pickle.PickleError("boom")}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "not a safe checkpoint" in msg and "weights_only=False" not in msg and "\n" not in msg


def test_truncated_checkpoint_is_damaged_not_unsafe(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint"):
        load_checkpoint(path)


def test_half_written_checkpoint_of_a_killed_run_is_removed_on_load(tmp_path):
    import subprocess
    import sys

    from featstore.common import fileio

    save_checkpoint(tmp_path / "checkpoint.pt", _state())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".checkpoint.pt.{dead.stdout.strip()}.abcd_123.tmp"
    stale.write_bytes(b"\0" * 1000)
    mine = tmp_path / f".checkpoint.pt.{fileio.os.getpid()}.zzzz_999.tmp"  # a live writer's: kept
    mine.write_bytes(b"\0")
    load_checkpoint(tmp_path)
    assert not stale.exists() and mine.exists()
