"""Messages that name the cause (issue points 9 and 10), each through the real entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from relstores import SMALL  # noqa: E402
from trainer_synth import make_store as make_train_store  # noqa: E402

from cli.main import main  # noqa: E402
from featstore.store.core import FeatureStore  # noqa: E402


def _nan_row(store: FeatureStore, row: int) -> None:
    s, e = next((s, e) for s, e in store.shard_ranges() if s <= row < e)
    a = store.read("audio", slice(s, e)).astype(np.float32)
    a[row - s, 1] = np.nan
    store.write_rows(s, embeddings={"audio": a, "video": store.read("video", slice(s, e))})


def test_nan_row_is_named_by_train_and_eval(tmp_path, capsys):
    store = make_train_store(tmp_path / "s.zarr", n_per_class=12)
    run = tmp_path / "run"
    assert (
        main(["train", "finetune", str(store.path), "--out", str(run), "--epochs", "1", *SMALL])
        == 0
    )
    test_rows = np.flatnonzero(np.array([str(x) for x in store.splits.tolist()]) == "test")
    bad = int(test_rows[len(test_rows) // 2])
    _nan_row(FeatureStore.open(store.path, mode="r+"), bad)
    capsys.readouterr()
    rc = main(["eval", str(run), str(store.path), "--split", "test", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and f"at rows [{bad}]" in err and "Traceback" not in err
    rc = main(
        [
            "train",
            "finetune",
            str(store.path),
            "--out",
            str(tmp_path / "run2"),
            "--epochs",
            "1",
            "--split",
            "all",
            *SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"at rows [{bad}]" in err and "lower --lr" not in err


@pytest.mark.parametrize(
    "argv", [["--backend", "nope"], ["--device", "tpu"], ["--restart-sample", "-5"]]
)
def test_bad_cluster_option_values_exit_2(store_path, tmp_path, capsys, argv):
    rc = main(["cluster", str(store_path), "--k", "2", "--out", str(tmp_path / "L.npy"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and argv[1] in err


def _h5(path, audio, video):
    with h5py.File(path, "w") as h:
        h["a"], h["v"] = audio, video
    return path


def test_empty_folder_is_accepted_as_a_new_store(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    h5 = _h5(tmp_path / "e.h5", np.ones((4, 3), np.float32), np.ones((4, 2), np.float32))
    rc = main(
        [
            "store",
            "import-h5",
            str(h5),
            str(tmp_path / "s.zarr"),
            "--audio-dataset",
            "a",
            "--video-dataset",
            "v",
            "--no-progress",
        ]
    )
    assert rc == 0 and FeatureStore.open(tmp_path / "s.zarr").n_rows == 4


def test_zero_column_hdf5_dataset_is_refused_at_import(tmp_path, capsys):
    h5 = _h5(tmp_path / "e.h5", np.ones((4, 0), np.float32), np.ones((4, 2), np.float32))
    rc = main(
        [
            "store",
            "import-h5",
            str(h5),
            str(tmp_path / "s.zarr"),
            "--audio-dataset",
            "a",
            "--video-dataset",
            "v",
            "--no-progress",
        ]
    )
    assert rc == 2 and "no feature columns" in capsys.readouterr().err
    assert not (tmp_path / "s.zarr").exists()


def test_train_refuses_lr_nan_and_out_inside_the_store(tmp_path, capsys):
    from cli.main import main
    from featstore.errors import InputError, OutputError
    from trainer.config import TrainConfig

    cfg = TrainConfig(lr=float("nan"))
    with pytest.raises(InputError, match="finite"):
        cfg.validate()
    store = tmp_path / "s.zarr"
    store.mkdir()
    from featstore.common.fileio import refuse_inside_store

    with pytest.raises(OutputError, match="inside the store"):
        refuse_inside_store(store / "run", str(store))
    assert main(["train", "finetune", str(store), "--out", str(tmp_path / "r"), "--lr", "nan"]) == 2
    assert "Traceback" not in capsys.readouterr().err
