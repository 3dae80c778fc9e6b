"""Hostile manifest lines: bounded memory, and a ManifestError naming the row, never a traceback."""

from __future__ import annotations

import resource

import pytest

from featstore.errors import ManifestError
from featstore.extract.manifest import load_manifest


def _write(tmp_path, body: str, name="m.csv"):
    m = tmp_path / name
    m.write_bytes(("path,label,split\n" + body).encode())
    return m


@pytest.mark.parametrize("label", ["20000000", "99999999999", "9" * 40])
def test_huge_numeric_label_does_not_grow_the_class_list(tmp_path, label):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    man = load_manifest(_write(tmp_path, f"a.mp4,3,train\nb.mp4,{label},train\n"))
    assert man.class_names == ["3", label]
    assert man.labels == [0, 1]
    assert any("numbered 0..1" in n for n in man.notes)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_small_numeric_labels_stay_class_indices(tmp_path):
    man = load_manifest(_write(tmp_path, "a.mp4,0,train\nb.mp4,7,train\n"))
    assert man.class_names == [str(i) for i in range(8)] and man.labels == [0, 7]


def test_superscript_digit_label_is_a_class_name(tmp_path):
    man = load_manifest(_write(tmp_path, "a.mp4,\u00b2,train\nb.mp4,1,train\n"))
    assert man.class_names == ["1", "\u00b2"] and man.labels == [1, 0]


def test_bare_cr_inside_a_field_names_the_row(tmp_path):
    with pytest.raises(ManifestError, match=r"row 3: a bare carriage return"):
        load_manifest(_write(tmp_path, "a.mp4,x,train\nb\r.mp4,y,train\n"))


def test_label_longer_than_the_csv_field_limit_names_the_row(tmp_path):
    with pytest.raises(ManifestError, match=r"row 2: a field is longer than 131072 characters"):
        load_manifest(_write(tmp_path, "a.mp4," + "x" * 140_000 + ",train\n"))
