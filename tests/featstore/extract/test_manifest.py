import json

import pytest

from featstore.errors import ManifestError
from featstore.extract.manifest import load_manifest


def test_csv_manifest_resolves_relative_paths_and_numbers_classes(tmp_path):
    (tmp_path / "sub").mkdir()
    m = tmp_path / "sub" / "m.csv"
    m.write_text(
        "path,label,split,id\n"
        "clips/a.mp4,walk,train,A\n"
        "/abs/b.mp4,run,test,B\n"
        "clips/c.mp4,,train,C\n"
        "clips/d.mp4,unknown,,D\n"
        "\n"
    )
    man = load_manifest(m)
    assert man.kind == "csv"
    assert man.class_names == ["run", "walk"]  # sorted, independent of row order
    assert man.labels == [1, 0, -1, -1]
    assert man.ids == ["A", "B", "C", "D"]
    assert man.splits == ["train", "test", "train", ""]
    assert man.entries[0].path == tmp_path / "sub" / "clips" / "a.mp4"
    assert str(man.entries[1].path) == "/abs/b.mp4"
    assert len(man.sha256) == 64


def test_csv_manifest_numeric_labels_are_indices_and_id_defaults_to_path(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,label\na.mp4,3\nb.mp4,0\nc.mp4,-1\n")
    man = load_manifest(m)
    assert man.labels == [3, 0, -1]
    assert man.class_names == ["0", "1", "2", "3"]
    assert man.ids == ["a.mp4", "b.mp4", "c.mp4"]


def test_csv_sha_changes_with_content(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("path\nx.mp4\n")
    b.write_text("path\ny.mp4\n")
    assert load_manifest(a).sha256 != load_manifest(b).sha256


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty CSV"),
        ("file,label\na.mp4,x\n", "row 1.*no 'path' column"),
        ("path,label\na.mp4,x\nb.mp4\n", "row 3: expected 2 fields"),
        ("path,label\n,x\n", "row 2: empty path"),
        ("path,id\na.mp4,1\nb.mp4,1\n", "duplicate clip id '1'"),
        ("path\n", "lists no clips"),
    ],
)
def test_csv_manifest_errors_name_file_and_row(tmp_path, text, match):
    m = tmp_path / "bad.csv"
    m.write_text(text)
    with pytest.raises(ManifestError, match=match) as info:
        load_manifest(m)
    assert "bad.csv" in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nope.csv")


def _cavmae(tmp_path):
    (tmp_path / "frames" / "v2" / "frame_0").mkdir(parents=True)
    data = {
        "data": [
            {
                "video_id": "v1",
                "wav": "audio/v1.wav",
                "video_path": "video/v1.mp4",
                "labels": "/m/b,/m/a",
            },
            {"video_id": "v2", "wav": "audio/v2.wav", "video_path": "frames/v2", "labels": "/m/a"},
            {"video_id": "v3", "wav": "audio/v3.wav", "video_path": "", "labels": ""},
        ]
    }
    j = tmp_path / "train.json"
    j.write_text(json.dumps(data))
    lab = tmp_path / "class_labels_indices.csv"
    lab.write_text('index,mid,display_name\n0,/m/a,"Speech"\n1,/m/b,"Dog, bark"\n')
    return j, lab


def test_cavmae_json_with_label_csv_uses_first_mid(tmp_path):
    j, lab = _cavmae(tmp_path)
    man = load_manifest(j, label_csv=lab)
    assert man.kind == "cavmae"
    assert man.class_names == ["Speech", "Dog, bark"]
    assert man.labels == [1, 0, -1]
    assert man.ids == ["v1", "v2", "v3"]
    e1, e2, e3 = man.entries
    assert (
        e1.path == tmp_path / "video" / "v1.mp4" and e1.audio_path == tmp_path / "audio" / "v1.wav"
    )
    assert e2.path == tmp_path / "frames" / "v2"
    assert e3.path == tmp_path / "audio" / "v3.wav"  # audio-only entry
    assert man.sha256 != load_manifest(j).sha256  # the label CSV is part of the content


def test_cavmae_without_label_csv_and_errors(tmp_path):
    j, lab = _cavmae(tmp_path)
    man = load_manifest(j)
    assert man.class_names == ["/m/a", "/m/b"] and man.labels == [1, 0, -1]
    lab.write_text("index,mid,display_name\n0,/m/a,Speech\n")
    with pytest.raises(ManifestError, match=r"data\[0\].*'/m/b' is not in the label CSV"):
        load_manifest(j, label_csv=lab)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="bad.json: not valid JSON"):
        load_manifest(bad)
    bad.write_text('{"data": [{"video_id": "x"}]}')
    with pytest.raises(ManifestError, match=r"data\[0\]: neither"):
        load_manifest(bad)


def test_folder_manifest_ucf101_layout(tmp_path):
    for cls, clips in {
        "WalkingWithDog": ["v_a.avi", "v_b.mp4"],
        "ApplyEyeMakeup": ["v_c.avi"],
        "Empty": [],
    }.items():
        (tmp_path / cls).mkdir()
        for c in clips:
            (tmp_path / cls / c).write_bytes(b"x")
    (tmp_path / "WalkingWithDog" / "notes.txt").write_text("ignored")
    (tmp_path / "WalkingWithDog" / ".hidden.mp4").write_bytes(b"x")
    man = load_manifest(tmp_path)
    assert man.kind == "folder"
    assert man.class_names == ["ApplyEyeMakeup", "Empty", "WalkingWithDog"]
    assert man.ids == ["ApplyEyeMakeup/v_c.avi", "WalkingWithDog/v_a.avi", "WalkingWithDog/v_b.mp4"]
    assert man.labels == [0, 2, 2]
    sha = man.sha256
    (tmp_path / "Empty" / "new.mp4").write_bytes(b"x")
    assert load_manifest(tmp_path).sha256 != sha


def test_folder_without_classes(tmp_path):
    with pytest.raises(ManifestError, match="no class sub-folders"):
        load_manifest(tmp_path)
