"""The prepared GPU check works on a CPU machine in dry-run mode and its wheel list is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_runs_every_section_and_the_wheel_list_covers_its_imports(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = data["sections"]
    for name in (
        "kmeans",
        "confusion",
        "trainer",
        "encoders",
        "extract",
        "gpu_tests_collect",
        "import_coverage",
    ):
        assert sections[name]["status"] == "ok", (name, sections[name])
    assert sections["import_coverage"]["missing"] == {}
    assert {"zarr", "av"} <= set(sections["import_coverage"]["wheels"])
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check (dry run")


def test_import_check_names_a_module_missing_from_the_wheels(monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_suite

    monkeypatch.setattr(gpu_suite, "wheel_dists", lambda: set())  # as if the wheel list were empty
    import zarr  # noqa: F401  (imported by the check through the store)

    res: dict = {}
    try:
        gpu_suite.check_imports(res)
    except RuntimeError as exc:
        assert "zarr" in str(exc)
    else:
        raise AssertionError("an empty wheel list must be refused")
    assert "zarr" in res["missing"]
