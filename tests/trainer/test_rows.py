"""Which rows a phase uses: train, update (M-hat) and eval rows, never overlapping."""

from __future__ import annotations

import numpy as np
import pytest
from trainer_synth import make_store

from featstore.errors import InputError
from trainer.rows import resolve_row_sets


def test_row_sets_exclude_failed_missing_unlabelled_and_hold_out_update(tmp_path):
    store = make_store(tmp_path / "s.zarr", fail_rows=[0, 1], audio_missing_rows=[2])
    labels = store.labels.astype(np.int64).copy()
    labels[3] = -1
    rs = resolve_row_sets(
        store, labels, split="train", update_set="val:0.5", eval_split="val", seed=0
    )
    for r in (0, 1, 2, 3):
        assert not rs.train[r] and not rs.update[r] and not rs.evaluate[r]
    assert not (rs.train & rs.update).any() and not (rs.update & rs.evaluate).any()
    splits = np.array([str(s) for s in store.splits.tolist()])
    assert set(splits[rs.update]) == {"val"} and set(splits[rs.train]) == {"train"}
    again = resolve_row_sets(
        store, labels, split="train", update_set="val:0.5", eval_split="val", seed=0
    )
    np.testing.assert_array_equal(rs.update, again.update)
    leaky = resolve_row_sets(
        store, labels, split="train", update_set="test:0.1", eval_split="val", seed=0
    )
    assert leaky.leaks_test and set(splits[leaky.update]) == {"test"}
    assert abs(leaky.update.sum() - 0.1 * ((splits == "test") & (labels >= 0)).sum()) <= 1


def test_auto_update_set_without_val_split_holds_out_training_rows(tmp_path):
    store = make_store(tmp_path / "s.zarr", splits=["train"] * 240)
    rs = resolve_row_sets(
        store,
        store.labels.astype(np.int64),
        split="auto",
        update_set="auto",
        eval_split="val",
        seed=0,
    )
    assert (
        rs.update_spec == "train:0.1" and rs.update.sum() == 24 and not (rs.train & rs.update).any()
    )
    with pytest.raises(InputError, match="no rows in split"):
        resolve_row_sets(
            store,
            store.labels.astype(np.int64),
            split="nosuch",
            update_set="auto",
            eval_split="val",
            seed=0,
        )
