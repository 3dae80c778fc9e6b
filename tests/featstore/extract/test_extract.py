import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clipfactory import make_broken_clips, make_clip, make_unusual_clips

from featstore.errors import InputError, StoreConfigMismatch, StoreError
from featstore.extract.decode import decode_clip
from featstore.extract.encoders import get_encoder
from featstore.extract.manifest import load_manifest
from featstore.extract.pipeline import ExtractConfig, extract, extract_rows
from featstore.store import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, FeatureStore

FAST = dict(workers=0, chunk_rows=4, batch_size=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 good clips, every broken kind and the unusual ones, in one CSV manifest."""
    root = tmp_path_factory.mktemp("ds")
    rows = []
    for i in range(8):
        make_clip(
            root / "clips" / f"c{i}.mp4",
            seed=i,
            color=(220, 30, 30) if i % 2 else (30, 30, 220),
            freq=300.0 if i % 2 else 900.0,
        )
        rows.append(f"clips/c{i}.mp4,{'run' if i % 2 else 'walk'},{'train' if i < 6 else 'test'}")
    broken = make_broken_clips(root / "broken")
    unusual = make_unusual_clips(root / "unusual")
    for p in [*broken.values(), *unusual.values()]:
        rows.append(f"{p.relative_to(root)},walk,train")
    manifest = root / "manifest.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return manifest, broken, unusual


def _all_arrays(path):
    s = FeatureStore.open(path)
    return s.attrs, {name: np.asarray(s.array(name)[:]) for name in s.array_names()}


def _assert_same_store(a, b):
    attrs_a, arr_a = _all_arrays(a)
    attrs_b, arr_b = _all_arrays(b)
    assert attrs_a == attrs_b
    assert arr_a.keys() == arr_b.keys()
    for name in arr_a:
        assert np.array_equal(arr_a[name], arr_b[name]), name


def test_end_to_end_with_broken_and_unusual_files(dataset, tmp_path):
    manifest, broken, unusual = dataset
    updates = []
    summary = extract(
        manifest, tmp_path / "s", ExtractConfig(**{**FAST, "workers": 2}), progress=updates.append
    )
    store = FeatureStore.open(tmp_path / "s")
    n = 8 + len(broken) + len(unusual)
    # progress as data: one task, every clip counted once, failures so far beside the rate
    assert updates[0].total == n and updates[-1].done
    assert sum(u.advance for u in updates) == n
    assert f"clips/s, {len(broken)} failed" in [u.info for u in updates if u.info][-1]
    assert store.n_rows == n and summary.n_rows == n
    assert summary.n_failed == len(broken) and summary.n_done == 8 + len(unusual)
    failed = {Path(f.path).name: f.reason for f in store.failures()}
    assert set(failed) == {p.name for p in broken.values()}
    assert all(reason for reason in failed.values())
    assert "empty file" in failed["empty.mp4"] and "file not found" in failed["does_not_exist.mp4"]

    ids = list(store.ids)
    row = {Path(p).name: i for i, p in enumerate(store.paths)}
    audio_missing, video_missing = store.missing("audio"), store.missing("video")
    assert audio_missing[row["video_only.mp4"]] and not video_missing[row["video_only.mp4"]]
    assert video_missing[row["audio_only.mp4"]] and not audio_missing[row["audio_only.mp4"]]
    assert not (audio_missing[row["odd.mp4"]] or video_missing[row["odd.mp4"]])
    assert summary.audio_missing == 1 and summary.video_missing == 1
    # missing modality is zeros *and* flagged, so readers skip it
    assert not store.valid_rows(["audio"])[row["video_only.mp4"]]
    assert store.valid_rows(["video"])[row["video_only.mp4"]]

    # stored embeddings equal encoding the decoded clip directly (float16 storage)
    v_enc, a_enc = get_encoder("frame-stats"), get_encoder("kaldi-fbank")
    clip = decode_clip(
        manifest.parent / "clips" / "c3.mp4", video=v_enc.video_spec, audio=a_enc.audio_spec
    )
    np.testing.assert_allclose(
        store.read("video", [3])[0], v_enc.encode([clip.video])[0], atol=2e-3
    )
    np.testing.assert_allclose(
        store.read("audio", [3])[0], a_enc.encode([clip.audio])[0], atol=2e-3, rtol=2e-3
    )
    assert store.array("audio").dtype == np.float16

    # manifest metadata and encoder provenance
    assert store.class_names == ["run", "walk"]
    assert list(store.labels[:4]) == [1, 0, 1, 0]
    assert list(store.splits[5:8]) == ["train", "test", "test"]
    assert ids[0] == "clips/c0.mp4"
    mods = store.modalities
    assert (
        mods["video"].encoder == "frame-stats"
        and mods["video"].weights == "none"
        and not mods["video"].pretrained
    )
    assert mods["audio"].config["norm_mean"] == -5.081 and mods["audio"].dim == 256
    assert store.attrs["manifest_sha256"] == load_manifest(manifest).sha256

    # the store differentiates the two classes
    vid = store.read("video", np.arange(8)).astype(np.float32)
    same = np.linalg.norm(vid[0] - vid[2])
    other = np.linalg.norm(vid[0] - vid[1])
    assert other > same


def test_rerun_skips_finished_work_and_mismatch_is_refused(dataset, tmp_path):
    manifest, *_ = dataset
    first = extract(manifest, tmp_path / "s", ExtractConfig(**FAST))
    again = extract(manifest, tmp_path / "s", ExtractConfig(**FAST))
    assert again.n_processed == 0 and again.n_skipped == first.n_rows
    with pytest.raises(StoreConfigMismatch, match="video encoder"):
        extract(manifest, tmp_path / "s", ExtractConfig(**FAST, video_config={"num_frames": 8}))
    with pytest.raises(StoreConfigMismatch, match="dtype"):
        extract(manifest, tmp_path / "s", ExtractConfig(**{**FAST, "dtype": "float32"}))
    with pytest.raises(StoreConfigMismatch, match="audio encoder"):
        extract(manifest, tmp_path / "s", ExtractConfig(**FAST, audio_encoder=None))
    fresh = extract(
        manifest, tmp_path / "s", ExtractConfig(**{**FAST, "dtype": "float32", "overwrite": True})
    )
    assert fresh.n_processed == first.n_rows
    assert FeatureStore.open(tmp_path / "s").dtype == "float32"


def test_overwrite_never_deletes_a_non_store(dataset, tmp_path):
    manifest, *_ = dataset
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(StoreError, match="not a diccae store"):
        extract(manifest, precious, ExtractConfig(**{**FAST, "overwrite": True}))
    assert (precious / "thesis.tex").exists()


def test_single_modality_and_bad_config(dataset, tmp_path):
    manifest, *_ = dataset
    s = extract(manifest, tmp_path / "v", ExtractConfig(**FAST, audio_encoder=None))
    store = FeatureStore.open(tmp_path / "v")
    assert list(store.modalities) == ["video"] and "audio" not in store.array_names()
    # the audio-only clip has no stream for the only requested modality -> failed
    assert any("audio_only" in f.path for f in s.failures)
    with pytest.raises(InputError, match="at least one"):
        extract(
            manifest, tmp_path / "x", ExtractConfig(**FAST, audio_encoder=None, video_encoder=None)
        )
    with pytest.raises(InputError, match="is a video encoder"):
        extract(manifest, tmp_path / "x", ExtractConfig(**FAST, audio_encoder="frame-stats"))


def test_extract_rows_needs_whole_chunks(dataset, tmp_path):
    manifest, *_ = dataset
    extract(manifest, tmp_path / "s", ExtractConfig(**FAST))
    store = FeatureStore.open(tmp_path / "s", mode="r+")
    with pytest.raises(InputError, match="not one chunk"):
        extract_rows(store, load_manifest(manifest), [(1, 4)], ExtractConfig(**FAST))


KILL_SCRIPT = """
import sys
from featstore.extract.pipeline import ExtractConfig, extract
extract(sys.argv[1], sys.argv[2], ExtractConfig(workers=1, chunk_rows=2, batch_size=2))
"""


def test_resume_after_sigkill_gives_identical_store(tmp_path):
    rows = []
    for i in range(24):
        make_clip(tmp_path / "clips" / f"c{i}.mp4", seed=i, n_frames=6, seconds=0.5)
        rows.append(f"clips/c{i}.mp4,{i % 3}")
    broken = make_broken_clips(tmp_path / "broken")
    rows += [f"broken/{p.name},0" for p in broken.values()]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    cfg = ExtractConfig(workers=1, chunk_rows=2, batch_size=2)

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(manifest), str(killed)], env=env
    )
    at_kill = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if (killed / "zarr.json").exists():
                try:
                    counts = FeatureStore.open(killed).counts()
                except Exception:
                    counts = None
                if counts and counts["done"] + counts["failed"] >= 4:
                    proc.send_signal(signal.SIGKILL)
                    at_kill = counts
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and at_kill is None:
            proc.kill()
        proc.wait()
    assert at_kill is not None, "extraction finished before it could be killed"
    assert FeatureStore.open(killed).counts()["pending"] > 0

    resumed = extract(manifest, killed, cfg)
    assert resumed.n_skipped >= 4 and resumed.n_processed > 0
    extract(manifest, tmp_path / "clean", cfg)
    _assert_same_store(killed, tmp_path / "clean")
    st = FeatureStore.open(killed).status()
    assert (st == STATUS_PENDING).sum() == 0 and (st == STATUS_FAILED).sum() == len(broken)
    assert (st == STATUS_DONE).sum() == 24
    assert not list(tmp_path.glob(".killed.creating-*"))
