"""Direct chunk reads (featstore.store.chunkread) return exactly what zarr returns."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr

from featstore.store import FeatureStore, ModalitySpec
from featstore.store.chunkread import ChunkLayout

AUDIO = ModalitySpec("a", 4)
VIDEO = ModalitySpec("v", 3)


def _store(path, *, dtype, compression, n=10, chunk_rows=4, written=(0, 10)):
    store = FeatureStore.create(
        path,
        ids=[f"clip{i:03d}" for i in range(n)],
        modalities={"audio": AUDIO, "video": VIDEO},
        labels=[i % 3 for i in range(n)],
        chunk_rows=chunk_rows,
        dtype=dtype,
        compression=compression,
    )
    rng = np.random.default_rng(7)
    s, e = written
    store.write_rows(
        s,
        embeddings={
            "audio": rng.standard_normal((e - s, 4)).astype(np.float32),
            "video": rng.standard_normal((e - s, 3)).astype(np.float32),
        },
    )
    return FeatureStore.open(path)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_every_row_slice_matches_zarr(tmp_path, dtype, compression):
    store = _store(tmp_path / "s.zarr", dtype=dtype, compression=compression)
    for name in ("audio", "video", "label", "status", "audio_missing"):
        arr = zarr.open_array(str(tmp_path / "s.zarr" / name), mode="r")
        assert ChunkLayout.of(arr) is not None, name
        for s in range(0, 11):
            for e in sorted({s, s + 1, s + 3, s + 4, s + 5, 10} & set(range(s, 11))):
                got = store.read(name, slice(s, e))
                want = np.asarray(arr[s:e])
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want, err_msg=f"{name}[{s}:{e}]")
                assert got.flags.writeable


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    store = _store(tmp_path / "s.zarr", dtype="float16", compression="zstd", written=(0, 4))
    arr = zarr.open_array(str(tmp_path / "s.zarr" / "audio"), mode="r")
    assert not (tmp_path / "s.zarr" / "audio" / "c" / "1").exists()
    np.testing.assert_array_equal(store.read("audio", slice(2, 10)), np.asarray(arr[2:10]))
    assert (store.read("audio", slice(4, 10)) == 0).all()


def test_layouts_zarr_must_read_are_refused(tmp_path):
    store = _store(tmp_path / "s.zarr", dtype="float16", compression="zstd")
    ids = zarr.open_array(str(tmp_path / "s.zarr" / "ids"), mode="r")
    assert ChunkLayout.of(ids) is None  # variable-length strings
    assert store.ids.tolist()[:2] == ["clip000", "clip001"]
    gz = zarr.create_array(
        str(tmp_path / "gz.zarr"),
        shape=(10, 4),
        chunks=(4, 4),
        dtype="float32",
        compressors=zarr.codecs.GzipCodec(),
    )
    sharded = zarr.create_array(
        str(tmp_path / "sh.zarr"), shape=(16, 4), chunks=(4, 4), shards=(8, 4), dtype="float32"
    )
    assert ChunkLayout.of(gz) is None and ChunkLayout.of(sharded) is None


def test_threads_reading_at_once_get_the_same_rows(tmp_path):
    store = _store(tmp_path / "s.zarr", dtype="float16", compression="zstd", n=4000, chunk_rows=64)
    want = store.read("audio", slice(0, 4000))
    got: dict[int, np.ndarray] = {}

    def part(i):
        got[i] = np.concatenate(
            [store.read("audio", slice(s, s + 64)) for s in range(i * 64, 4000, 4 * 64)]
        )

    threads = [threading.Thread(target=part, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        idx = np.concatenate([np.arange(s, min(s + 64, 4000)) for s in range(i * 64, 4000, 4 * 64)])
        np.testing.assert_array_equal(got[i], want[idx])


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("how", ["longer", "shorter"])
def test_a_chunk_of_the_wrong_size_is_damage(tmp_path, compression, how):
    from featstore.errors import StoreDamaged

    store = _store(tmp_path / "s.zarr", dtype="float32", compression=compression)
    f = tmp_path / "s.zarr" / "audio" / "c" / "1" / "0"
    raw = f.read_bytes()
    f.write_bytes(raw + raw[:8] if how == "longer" else raw[:-8])
    with pytest.raises(StoreDamaged, match="'audio' chunk 1"):
        store.read("audio", slice(0, 10))
