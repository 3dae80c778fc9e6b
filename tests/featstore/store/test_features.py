"""FeatureView: which rows and numbers clustering/confusion analysis actually see."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.errors import InputError
from featstore.store.core import FeatureStore, ModalitySpec
from featstore.store.features import COMBINED, FeatureView, feature_view, l2_normalize

N, DA, DV = 11, 4, 3


@pytest.fixture
def store(tmp_path):
    """11 rows in chunks of 4: row 2 failed, row 5 lacks audio, row 9 lacks video, row 10 pending."""
    s = FeatureStore.create(
        tmp_path / "s",
        ids=[f"c{i}" for i in range(N)],
        modalities={"audio": ModalitySpec("a", DA), "video": ModalitySpec("v", DV)},
        chunk_rows=4,
        dtype="float32",
    )
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((N, DA)).astype(np.float32) * 10
    video = rng.standard_normal((N, DV)).astype(np.float32) * 0.1
    audio_missing = np.zeros(N, bool)
    video_missing = np.zeros(N, bool)
    audio_missing[5] = True
    video_missing[9] = True
    audio[5] = 0
    video[9] = 0
    s.write_rows(
        0,
        embeddings={"audio": audio[:10], "video": video[:10]},
        missing={"audio": audio_missing[:10], "video": video_missing[:10]},
        failed={2: "broken"},
    )
    s.audio, s.video = audio, video  # expected values for the tests
    return s


def test_l2_normalize_rows_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    y = l2_normalize(x)
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])


def test_audio_view_skips_failed_missing_and_pending_rows(store):
    rows, x = FeatureView(store, "audio").load()
    assert rows.tolist() == [0, 1, 3, 4, 6, 7, 8, 9]  # 9 lacks video but has audio
    assert x.dtype == np.float32 and x.shape == (8, DA)
    np.testing.assert_array_equal(x, store.audio[rows])  # raw values, not normalised


def test_video_view(store):
    view = feature_view(store, "video")
    rows, x = view.load()
    assert rows.tolist() == [0, 1, 3, 4, 5, 6, 7, 8]
    np.testing.assert_array_equal(x, store.video[rows])
    assert view.dim == DV


def test_combined_view_normalises_each_modality_then_concatenates(store):
    view = feature_view(store)  # default is audio+video
    assert view.name == COMBINED and view.dim == DA + DV
    rows, x = view.load()
    assert rows.tolist() == [0, 1, 3, 4, 6, 7, 8]
    np.testing.assert_allclose(np.linalg.norm(x[:, :DA], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(x[:, DA:], axis=1), 1.0, rtol=1e-6)
    a = store.audio[rows] / np.linalg.norm(store.audio[rows], axis=1, keepdims=True)
    v = store.video[rows] / np.linalg.norm(store.video[rows], axis=1, keepdims=True)
    np.testing.assert_allclose(x, np.concatenate([a, v], axis=1), rtol=1e-6)
    assert view.nbytes() == 7 * (DA + DV) * 4
    assert view.valid_mask().sum() == 7


def test_iter_blocks_are_whole_chunks_in_store_order(store):
    view = feature_view(store, "audio")
    blocks = list(view.iter_blocks())
    assert [b[0].tolist() for b in blocks] == [[0, 1, 3], [4, 6, 7], [8, 9]]
    big = list(view.iter_blocks(rows_per_block=8))
    assert [b[0].tolist() for b in big] == [[0, 1, 3, 4, 6, 7], [8, 9]]
    # smaller than one chunk still reads whole chunks
    assert len(list(view.iter_blocks(rows_per_block=1))) == 3
    rows, x = view.load()
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), x)


def test_float16_store_is_read_as_float32(tmp_path):
    s = FeatureStore.create(
        tmp_path / "h",
        ids=["a", "b"],
        modalities={"audio": ModalitySpec("a", 2), "video": ModalitySpec("v", 2)},
    )
    s.write_rows(
        0, embeddings={"audio": np.array([[1, 2], [3, 4]]), "video": np.array([[1, 0], [0, 1]])}
    )
    rows, x = feature_view(s, "audio").load()
    assert x.dtype == np.float32 and x.tolist() == [[1, 2], [3, 4]]


def test_extra_array_view_skips_nan_rows_and_needs_both_modalities(store):
    fused = np.arange(N * 2, dtype=np.float32).reshape(N, 2)
    fused[1] = np.nan  # not computed for this row
    store.write_feature_array("fused", fused)
    view = feature_view(store, "fused")
    rows, x = view.load()
    # valid = done and both modalities present (0,1,3,4,6,7,8), minus NaN row 1
    assert rows.tolist() == [0, 3, 4, 6, 7, 8]
    np.testing.assert_array_equal(x, fused[rows])  # not normalised
    assert view.dim == 2


@pytest.mark.parametrize("name", ["audio", "video", COMBINED])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_an_error_naming_the_rows(tmp_path, name, bad):
    s = FeatureStore.create(
        tmp_path / "s",
        ids=[f"c{i}" for i in range(6)],
        modalities={"audio": ModalitySpec("a", 2), "video": ModalitySpec("v", 2)},
        chunk_rows=4,
        dtype="float32",
    )
    a = np.ones((6, 2), np.float32)
    v = np.ones((6, 2), np.float32)
    (a if name != "video" else v)[5, 1] = bad
    s.write_rows(0, embeddings={"audio": a, "video": v})
    view = feature_view(s, name)
    first = next(view.iter_blocks())  # the clean first chunk is still delivered
    assert first[0].tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match=r"non-finite values in .* at rows \[5\]"):
        view.load()


def test_inf_in_extra_array_is_reported(store):
    fused = np.ones((N, 2), np.float32)
    fused[3, 0] = np.inf
    store.write_feature_array("fused", fused)
    with pytest.raises(InputError, match="non-finite"):
        feature_view(store, "fused").load()


def test_unknown_feature_name_lists_choices(store):
    with pytest.raises(
        InputError, match=r"no feature array 'fusd'; choose one of audio\+video, audio, video"
    ):
        feature_view(store, "fusd")
    with pytest.raises(InputError):
        feature_view(store, "status")  # a row array is not a feature array


def test_combined_needs_both_modalities(tmp_path):
    s = FeatureStore.create(tmp_path / "a", ids=["x"], modalities={"audio": ModalitySpec("a", 2)})
    with pytest.raises(InputError, match=r"needs \['video'\]"):
        feature_view(s, COMBINED)


def test_view_on_read_only_store_and_empty_result(store):
    ro = FeatureStore.open(store.path)
    rows, x = feature_view(ro, "audio").load()
    assert len(rows) == 8
    empty = FeatureStore.create(
        store.path.parent / "e",
        ids=["a", "b"],
        modalities={"audio": ModalitySpec("a", 3), "video": ModalitySpec("v", 2)},
    )
    rows, x = feature_view(empty).load()  # everything pending
    assert rows.shape == (0,) and x.shape == (0, 5) and x.dtype == np.float32
