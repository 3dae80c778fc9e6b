import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "featstore"))
from clipfactory import make_broken_clips, make_clip  # noqa: E402

from cli.main import main
from featstore.errors import SomeClipsFailed  # noqa: E402
from featstore.store import FeatureStore  # noqa: E402


def _csv(tmp_path, n=4, broken=False):
    rows = []
    for i in range(n):
        make_clip(tmp_path / f"c{i}.mp4", seed=i, n_frames=6, seconds=0.5)
        rows.append(f"c{i}.mp4,{'ab'[i % 2]}")
    if broken:
        for p in make_broken_clips(tmp_path / "broken").values():
            rows.append(f"broken/{p.name},a")
    m = tmp_path / "m.csv"
    m.write_text("path,label\n" + "\n".join(rows) + "\n")
    return m


def test_extract_exit_codes_and_json(tmp_path, capsys):
    good = _csv(tmp_path / "good")
    assert (
        main(["extract", str(good), str(tmp_path / "s1"), "--workers", "0", "--no-progress"]) == 0
    )
    bad = _csv(tmp_path / "bad", broken=True)
    rc = main(
        [
            "extract",
            str(bad),
            str(tmp_path / "s2"),
            "--workers",
            "0",
            "--no-progress",
            "--json",
            "--chunk-rows",
            "3",
            "--dtype",
            "float32",
        ]
    )
    assert rc == SomeClipsFailed.exit_code == 6
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["n_failed"] == 5 and summary["n_done"] == 4
    assert {Path(f["path"]).name for f in summary["failures"]} >= {"empty.mp4", "text.mp4"}
    store = FeatureStore.open(tmp_path / "s2")
    assert store.chunk_rows == 3 and store.dtype == "float32"
    # rerun resumes (nothing to do) and still reports the failed clips
    assert (
        main(
            [
                "extract",
                str(bad),
                str(tmp_path / "s2"),
                "--workers",
                "0",
                "--no-progress",
                "--chunk-rows",
                "3",
                "--dtype",
                "float32",
            ]
        )
        == 6
    )
    # a different configuration is refused (exit 3) until --overwrite
    assert main(["extract", str(bad), str(tmp_path / "s2"), "--workers", "0", "--no-progress"]) == 3
    assert "different configuration" in capsys.readouterr().err


def test_extract_bad_input_and_missing_weights(tmp_path, monkeypatch, capsys):
    assert main(["extract", str(tmp_path / "nope.csv"), str(tmp_path / "s"), "--no-progress"]) == 2
    good = _csv(tmp_path)
    assert (
        main(
            ["extract", str(good), str(tmp_path / "s"), "--video-encoder", "nope", "--no-progress"]
        )
        == 2
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DICCAE_OFFLINE", "1")
    rc = main(
        ["extract", str(good), str(tmp_path / "s"), "--video-encoder", "r3d_18", "--no-progress"]
    )
    assert rc == 4
    err = capsys.readouterr().err
    assert "r3d_18-b3b3357e.pth" in err and not (tmp_path / "s").exists()


def test_extract_video_only_with_random_weights(tmp_path):
    good = _csv(tmp_path, n=2)
    rc = main(
        [
            "extract",
            str(good),
            str(tmp_path / "s"),
            "--audio-encoder",
            "none",
            "--video-encoder",
            "resnet18",
            "--video-weights",
            "random",
            "--workers",
            "0",
            "--no-progress",
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    spec = FeatureStore.open(tmp_path / "s").modalities["video"]
    assert (spec.encoder, spec.weights, spec.pretrained, spec.dim) == (
        "resnet18",
        "random",
        False,
        512,
    )


def _write_wav(path, seconds=0.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    pcm = (0.3 * np.sin(2 * np.pi * 500 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def test_extract_cavmae_json_and_folder_tree(tmp_path):
    (tmp_path / "video").mkdir()
    (tmp_path / "audio").mkdir()
    for vid in ("v1", "v2"):
        make_clip(tmp_path / "video" / f"{vid}.mp4", seed=int(vid[1]), n_frames=6, audio=False)
        _write_wav(tmp_path / "audio" / f"{vid}.wav")
    data = {
        "data": [
            {
                "video_id": "v1",
                "wav": "audio/v1.wav",
                "video_path": "video/v1.mp4",
                "labels": "/m/dog,/m/cat",
            },
            {
                "video_id": "v2",
                "wav": "audio/v2.wav",
                "video_path": "video/v2.mp4",
                "labels": "/m/cat",
            },
        ]
    }
    (tmp_path / "train.json").write_text(json.dumps(data))
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n0,/m/cat,Cat\n1,/m/dog,Dog\n")
    rc = main(
        [
            "extract",
            str(tmp_path / "train.json"),
            str(tmp_path / "s"),
            "--label-csv",
            str(tmp_path / "labels.csv"),
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0
    store = FeatureStore.open(tmp_path / "s")
    assert store.class_names == ["Cat", "Dog"] and list(store.labels) == [1, 0]
    assert (
        not store.missing("audio").any() and not store.missing("video").any()
    )  # sound from the wav files

    tree = tmp_path / "ucf"
    for cls in ("Archery", "Basketball"):
        make_clip(tree / cls / f"v_{cls}_g01.mp4", seed=len(cls), n_frames=6, seconds=0.3)
    assert main(["extract", str(tree), str(tmp_path / "u"), "--workers", "0", "--no-progress"]) == 0
    u = FeatureStore.open(tmp_path / "u")
    assert u.class_names == ["Archery", "Basketball"] and list(u.labels) == [0, 1]


def test_encoders_command(capsys):
    assert main(["encoders", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["kaldi-fbank"]["dim"] == 256 and infos["mvit_v2_s"]["dim"] == 768
    assert main(["encoders", "--modality", "audio"]) == 0
    assert "hubert_base" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--help"])
def test_extract_help_documents_exit_codes(flag, capsys):
    main(["extract", flag])
    out = capsys.readouterr().out
    assert "Exit status" in out and "6" in out
