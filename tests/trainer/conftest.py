"""Fixtures of the trainer tests (synthetic stores come from trainer_synth)."""

from __future__ import annotations

import pytest
from trainer_synth import make_store


@pytest.fixture
def small_store(tmp_path):
    return make_store(tmp_path / "store.zarr")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny MLPs: one thread avoids OpenMP contention on the shared 2-core CI box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
