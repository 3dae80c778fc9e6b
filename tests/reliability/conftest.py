"""Fixtures of the reliability suite (helpers live in relstores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from relstores import make_store


@pytest.fixture
def store_path(tmp_path) -> Path:
    return make_store(tmp_path / "s.zarr")
