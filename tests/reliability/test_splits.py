"""Split names are normalised, unknown ones refused, and training never takes test-like rows."""

from __future__ import annotations

import pytest

from featstore.errors import ManifestError
from featstore.extract.manifest import load_manifest
from featstore.store.core import FeatureStore, ModalitySpec
from featstore.store.splits import is_eval_split
from trainer.rows import split_mask


def _csv(tmp_path, splits):
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\n" + "".join(f"c{i}.mp4,a,{s}\n" for i, s in enumerate(splits)))
    return m


def test_known_split_names_are_normalised_case_insensitively(tmp_path):
    man = load_manifest(
        _csv(tmp_path, ["TRAIN", "Test", "validation", "Val", "dev", " train ", ""])
    )
    assert man.splits == ["train", "test", "val", "val", "val", "train", ""]


def test_unknown_split_is_refused_naming_the_row(tmp_path):
    with pytest.raises(ManifestError, match=r"row 3: unknown split 'tset'.*--split tset"):
        load_manifest(_csv(tmp_path, ["train", "tset"]))


def test_unknown_split_is_kept_when_named_explicitly(tmp_path):
    man = load_manifest(_csv(tmp_path, ["train", "Fold2"]), splits=("fold2",))
    assert man.splits == ["train", "fold2"]


@pytest.mark.parametrize(
    "name", ["test", "Test", "VAL", "validation", "test2", "heldout_val", "dev"]
)
def test_test_like_names_are_eval_splits(name):
    assert is_eval_split(name)


@pytest.mark.parametrize("name", ["train", "TRAIN", "fold2", "contest", "", "unlabelled"])
def test_other_names_are_not_eval_splits(name):
    assert not is_eval_split(name)


def test_auto_training_split_skips_test_like_rows_of_an_old_store(tmp_path):
    splits = ["train", "Test", "TRAIN", "validation", "test2", "", "Val", "fold2"]
    store = FeatureStore.create(
        tmp_path / "s",
        ids=[f"c{i}" for i in range(8)],
        splits=splits,
        modalities={"audio": ModalitySpec("a", 2)},
    )
    assert split_mask(store, "auto").tolist() == [
        True,
        False,
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert split_mask(store, "train").tolist() == [
        True,
        False,
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    assert split_mask(store, "val").tolist() == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
        False,
    ]
