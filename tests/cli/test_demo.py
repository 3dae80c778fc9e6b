"""`diccae demo --quick`: the whole pipeline end to end at CI size, and its report."""

from __future__ import annotations

import json
import re

import pytest

from cli.main import main


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    rc = main(["demo", "--quick", "--out", str(out)])
    assert rc == 0
    return out


def test_demo_writes_report_with_every_stage(demo_out):
    report = (demo_out / "report.md").read_text()
    for heading in (
        "## Headline",
        "## Data",
        "## Extraction and store",
        "## Pseudo-labels",
        "## Confusion degree of the raw",
        "## Training",
        "## Evaluation",
        "## Confusion degree before and after",
        "## Ablation",
        "## Time per stage",
    ):
        assert heading in report, heading
    # every picture the report cites exists
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(images) >= 6
    for rel in images:
        assert (demo_out / rel).is_file(), rel


def test_demo_numbers_are_real_measurements(demo_out):
    n = json.loads((demo_out / "report.json").read_text())
    assert n["extract"]["n_done"] == 64 and n["extract"]["n_failed"] == 0
    assert n["store"]["encoders"] == {"audio": "kaldi-fbank", "video": "frame-stats"}
    # per-class numbers are indexed by label value: the manifest numbers sorted class names
    assert n["store"]["class_names"] == sorted(n["data"]["classes"])
    assert 0.0 <= n["cluster"]["nmi"] <= 1.0 and n["cluster"]["k"] == 4
    for key in ("top1_audio", "top1_video", "top1_av"):
        assert 0.0 <= n["eval"][key] <= 1.0
    assert n["eval"]["n_rows"] > 0
    for feats in ("audio", "video", "audio+video"):
        assert n["confusion_raw"][feats]["mean"] >= 0.0
    assert n["confusion_fused"]["var"] >= 0.0
    ab = n["ablation"]
    assert set(ab) == {"full", "no_confusion_loss"} and n["ablation_seeds"] == 2
    per_seed = n["ablation_per_seed"]
    assert per_seed["full"][0]["top1_av"] == pytest.approx(
        n["eval"]["top1_av"]
    )  # the main run is seed 0 of full
    diffs = [
        a["top1_av"] - b["top1_av"]
        for a, b in zip(per_seed["no_confusion_loss"], per_seed["full"], strict=True)
    ]
    d = ab["no_confusion_loss"]["delta_top1_av"]
    assert (
        d["mean"] == pytest.approx(sum(diffs) / len(diffs)) and d["low"] <= d["mean"] <= d["high"]
    )
    assert d["within_noise"] == (d["low"] <= 0 <= d["high"])
    # label rounds: the initial clustering plus at least one re-clustering of fused features
    assert len(n["pretrain"]["label_rounds"]) >= 2
    assert n["eval"]["checkpoint"]["which"] == "best"
    assert (demo_out / "store.zarr").is_dir()
    assert n["seconds"]["total"] > 0


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    rc = main(["demo", "--quick", "--out", str(tmp_path)])
    assert rc == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_rerun_clears_only_what_a_demo_wrote(tmp_path):
    from demo.pipeline import prepare_out

    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old.txt").write_text("stale")
    (tmp_path / "notes.md").write_text("mine")
    prepare_out(tmp_path)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "report.json").exists()
    assert (tmp_path / "notes.md").read_text() == "mine"
    # an interrupted run (no report yet) is still recognised by the marker written first
    (tmp_path / "store.zarr").mkdir()
    prepare_out(tmp_path)
    assert not (tmp_path / "store.zarr").exists()


def test_demo_training_beats_its_baselines(demo_out):
    """Relations that fail when training is broken: the trained heads keep up with a linear probe on
    the same inputs (within two test clips), and the learned fused features are less confused than
    the raw embeddings they came from."""
    n = json.loads((demo_out / "report.json").read_text())
    e = n["eval"]
    clip = 1.0 / e["n_rows"]
    assert e["top1_av"] >= e["probe_av"] - 2 * clip
    assert (
        max(e["top1_audio"], e["top1_video"]) >= max(e["probe_audio"], e["probe_video"]) - 2 * clip
    )
    # (the quick demo's classes can already be apart in the raw embeddings: M = 0 on both sides)
    assert n["confusion_fused"]["mean"] <= n["confusion_raw"]["audio+video"]["mean"]
    report = (demo_out / "report.md").read_text()
    assert "linear probe on the same inputs" in report
    assert "within noise" in report or "outside the noise" in report
