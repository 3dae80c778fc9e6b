"""The demo data set: real MP4 clips whose classes are ambiguous per modality by design."""

from __future__ import annotations

import csv
import itertools
from collections import Counter

import av
import numpy as np
import pytest

from demo.data import load_demo_design, make_demo_dataset
from demo.design import demo_design
from demo.synth import render_audio, render_frames
from featstore.errors import InputError

SMALL = dict(n_clips=24, n_classes=4, duration=1.0, size=32, fps=8.0, degrade_prob=0.0)


def _decode(path):
    """(frames (T,H,W,3) uint8, audio (S,) float32, sample rate) read back with PyAV."""
    with av.open(str(path)) as c:
        assert c.streams.video and c.streams.audio, f"{path} lacks a stream"
        rate = c.streams.audio[0].rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
    return np.stack(frames), audio.astype(np.float32), rate


def _read_manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, make_demo_dataset(out, seed=3, **SMALL)


def test_design_pairs_each_modality_confuses_different_classes():
    d = demo_design(8)
    assert d.look_alike == [(0, 1), (4, 5)]
    assert d.sound_alike == [(2, 3), (6, 7)]
    for i, j in d.look_alike:
        assert d.classes[i].look == d.classes[j].look
        assert d.classes[i].sound != d.classes[j].sound
    for i, j in d.sound_alike:
        assert d.classes[i].sound == d.classes[j].sound
        assert d.classes[i].look != d.classes[j].look
    # every class is unique once both modalities are combined
    combos = {(c.look, c.sound) for c in d.classes}
    assert len(combos) == 8
    assert len(set(d.class_names)) == 8
    # pairs that are not designed to be alike differ in that modality
    alike_look = set(d.look_alike)
    for i, j in itertools.combinations(range(8), 2):
        if (i, j) not in alike_look:
            assert d.classes[i].look != d.classes[j].look


def test_odd_class_counts_and_bad_arguments(tmp_path):
    d = demo_design(5)
    assert d.look_alike == [(0, 1)] and d.sound_alike == [(2, 3)]
    assert len({(c.look, c.sound) for c in d.classes}) == 5
    with pytest.raises(InputError):
        demo_design(1)
    with pytest.raises(InputError, match="clips per class"):
        make_demo_dataset(tmp_path, n_clips=3, n_classes=4)
    with pytest.raises(InputError, match="frame size"):
        make_demo_dataset(tmp_path, n_clips=8, n_classes=2, size=33)


def test_manifest_and_files_decode(small_set):
    out, manifest = small_set
    rows = _read_manifest(manifest)
    assert list(rows[0]) == ["path", "label", "split", "id"]
    assert len(rows) == 24
    assert len({r["id"] for r in rows}) == 24
    names = load_demo_design(out).class_names
    assert Counter(r["label"] for r in rows) == {n: 6 for n in names}
    # stratified: every class appears in every split
    for name in names:
        assert {r["split"] for r in rows if r["label"] == name} == {"train", "val", "test"}
    for r in rows[:4]:
        frames, audio, rate = _decode(out / r["path"])
        assert frames.shape[1:] == (32, 32, 3)
        assert abs(frames.shape[0] - 8) <= 1
        assert rate == 16000
        assert abs(audio.size - 16000) < 2048  # AAC priming/padding may add a frame
        assert np.abs(audio).max() > 0.05


def test_deterministic_under_seed(tmp_path, small_set):
    out, manifest = small_set
    again = make_demo_dataset(tmp_path / "again", seed=3, **SMALL)
    assert _read_manifest(again) == _read_manifest(manifest)
    a, _, _ = _decode(out / "clips" / "demo-00005.mp4")
    b, _, _ = _decode(tmp_path / "again" / "clips" / "demo-00005.mp4")
    np.testing.assert_array_equal(a, b)
    make_demo_dataset(tmp_path / "other", seed=4, **SMALL)
    c, _, _ = _decode(tmp_path / "other" / "clips" / "demo-00005.mp4")
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0


def _dominant_hz(audio, rate):
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return np.fft.rfftfreq(audio.size, 1 / rate)[np.argmax(spec)]


def test_decoded_clips_show_the_designed_ambiguity(small_set):
    """Look-alike classes share colours but not pitch; sound-alike ones the reverse."""
    out, manifest = small_set
    rows = _read_manifest(manifest)
    design = load_demo_design(out)
    colour: dict[int, list] = {c: [] for c in range(4)}
    pitch: dict[int, list] = {c: [] for c in range(4)}
    index = {n: i for i, n in enumerate(design.class_names)}
    for r in rows:
        frames, audio, rate = _decode(out / r["path"])
        c = index[r["label"]]
        # colour histogram of the brightest pixels (the object) and the mean (background)
        colour[c].append(
            np.concatenate(
                [frames.reshape(-1, 3).mean(0), np.percentile(frames.reshape(-1, 3), 98, axis=0)]
            )
        )
        pitch[c].append(_dominant_hz(audio, rate))
    col = {c: np.mean(v, axis=0) for c, v in colour.items()}
    hz = {c: np.median(v) for c, v in pitch.items()}
    ((li, lj),) = design.look_alike
    ((si, sj),) = design.sound_alike
    look_gap = np.linalg.norm(col[li] - col[lj])
    other_gaps = [
        np.linalg.norm(col[i] - col[j])
        for i, j in itertools.combinations(range(4), 2)
        if (i, j) != (li, lj)
    ]
    assert look_gap < 0.5 * min(other_gaps)
    assert abs(hz[si] - hz[sj]) / hz[si] < 0.06
    assert abs(hz[li] - hz[lj]) / hz[li] > 0.2


def test_renderers_vary_per_clip_but_keep_the_class():
    d = demo_design(4)
    rng = np.random.default_rng(0)
    f1 = render_frames(d.classes[0].look, rng, n_frames=6, size=32)
    f2 = render_frames(d.classes[0].look, rng, n_frames=6, size=32)
    assert f1.shape == (6, 32, 32, 3) and f1.dtype == np.uint8
    assert not np.array_equal(f1, f2)
    a = render_audio(d.classes[0].sound, rng, n_samples=8000, sample_rate=16000)
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
    # a degraded clip keeps the trajectory but buries the object in noise
    clean = render_frames(d.classes[0].look, np.random.default_rng(1), n_frames=6, size=32)
    noisy = render_frames(
        d.classes[0].look, np.random.default_rng(1), n_frames=6, size=32, degrade=True
    )
    contrast = lambda f: np.abs(f.astype(float) - np.median(f, axis=(1, 2), keepdims=True)).mean()  # noqa: E731
    assert np.abs(noisy.astype(float) - clean).mean() > 20
    assert noisy.dtype == np.uint8 and contrast(noisy) != contrast(clean)
