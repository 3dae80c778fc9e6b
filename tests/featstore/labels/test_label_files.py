"""Label files: round trip, refusal of garbled/mismatched files, alignment, cluster_store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from featstore.errors import InputError, LabelFileError
from featstore.labels import (
    LabelFileMeta,
    agreement_metrics,
    align_labels,
    cluster_store,
    meta_path,
    read_label_file,
    write_label_file,
)
from featstore.store.core import FeatureStore, ModalitySpec


def make_store(path, n=600, *, centers=5, seed=0, failed=(7,)):
    X, y = make_blobs(n, centers=centers, n_features=8, cluster_std=0.4, random_state=seed)
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(n)],
        labels=y,
        chunk_rows=128,
        dtype="float32",
        modalities={"audio": ModalitySpec("a", 4), "video": ModalitySpec("v", 4)},
    )
    s.write_rows(
        0, embeddings={"audio": X[:, :4], "video": X[:, 4:]}, failed={r: "bad" for r in failed}
    )
    return s


def meta_for(store, k=4, **kw):
    return LabelFileMeta(
        k=k,
        inertia=1.0,
        inertias=[1.0, 2.0],
        n_iter=3,
        seed=0,
        backend="faiss",
        features="audio+video",
        store_fingerprint=store.fingerprint,
        **kw,
    )


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s")


def test_round_trip_plain_numpy_and_no_temp_files(tmp_path, store):
    labels = np.random.RandomState(0).randint(-1, 4, store.n_rows).astype(np.int32)
    path = tmp_path / "out" / "LABELS.npy"
    write_label_file(path, labels, meta_for(store))
    raw = np.load(path, allow_pickle=False)
    assert raw.dtype == np.int32 and (raw == labels).all()
    got, meta = read_label_file(path, store)
    assert (got == labels).all() and meta.k == 4 and meta.inertias == [1.0, 2.0]
    assert meta.n_rows == store.n_rows and meta.n_clustered == int((labels >= 0).sum())
    assert meta.created and meta.store_fingerprint == store.fingerprint
    assert sorted(p.name for p in path.parent.iterdir()) == ["LABELS.npy", "LABELS.npy.json"]


def _write(tmp_path, store, labels=None, **kw):
    path = tmp_path / "L.npy"
    labels = np.zeros(store.n_rows, np.int32) if labels is None else labels
    write_label_file(path, labels, meta_for(store, **kw))
    return path


def test_refuses_wrong_dtype_length_and_values(tmp_path, store):
    path = _write(tmp_path, store)
    np.save(path, np.zeros(store.n_rows, np.int64))
    with pytest.raises(LabelFileError, match="int32"):
        read_label_file(path)
    with pytest.raises(InputError, match=r"\[-1, 3\]"):
        write_label_file(tmp_path / "bad.npy", np.full(store.n_rows, 4, np.int32), meta_for(store))
    other = make_store(tmp_path / "other", n=300)
    short = tmp_path / "short.npy"
    write_label_file(short, np.zeros(300, np.int32), meta_for(other))
    with pytest.raises(LabelFileError, match="300 labels but store"):
        read_label_file(short, store)


def test_refuses_labels_from_another_store(tmp_path, store):
    path = _write(tmp_path, store)
    read_label_file(path, store)
    meta = json.loads(meta_path(path).read_text())
    meta["store_fingerprint"] = "0" * 32  # same length, different store
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(LabelFileError, match="another store"):
        read_label_file(path, store)
    read_label_file(path)  # without a store only the file itself is checked


def test_refuses_missing_or_garbled_metadata_and_garbled_npy(tmp_path, store):
    path = _write(tmp_path, store)
    meta_path(path).write_text('{"k": 4, "inertia": ')
    with pytest.raises(LabelFileError, match="garbled"):
        read_label_file(path)
    meta_path(path).write_text(json.dumps({"k": 4}))
    with pytest.raises(LabelFileError, match="lacks"):
        read_label_file(path)
    meta_path(path).unlink()
    with pytest.raises(LabelFileError, match="missing"):
        read_label_file(path)
    path.write_bytes(b"\x93NUMPY garbage" * 10)
    with pytest.raises(LabelFileError, match="not a readable"):
        read_label_file(path)
    with pytest.raises(LabelFileError, match="not found"):
        read_label_file(tmp_path / "nope.npy")


def test_refuses_labels_paired_with_metadata_of_another_run(tmp_path, store):
    path = _write(tmp_path, store)
    labels = np.ones(store.n_rows, np.int32)
    np.save(path, labels)  # as if a crash hit between the two renames
    with pytest.raises(LabelFileError, match="SHA-256"):
        read_label_file(path)


def test_align_recovers_a_permutation_and_keeps_minus_one():
    rs = np.random.RandomState(0)
    prev = rs.randint(0, 6, 500).astype(np.int32)
    perm = rs.permutation(6)
    new = perm[prev].astype(np.int32)
    new[[3, 9]] = -1
    aligned = align_labels(new, prev)
    assert (aligned[[3, 9]] == -1).all()
    keep = aligned >= 0
    assert (aligned[keep] == prev[keep]).all()
    # noisy relabelling: the matching still finds the majority partner
    noisy = new.copy()
    flip = rs.rand(500) < 0.1
    noisy[flip] = rs.randint(0, 6, flip.sum())
    assert (align_labels(noisy, prev)[~flip & keep] == prev[~flip & keep]).mean() > 0.99


def test_align_with_different_k_stays_in_range():
    prev = np.repeat(np.arange(4), 50).astype(np.int32)
    more = np.repeat([5, 2, 0, 1, 3, 4], [50, 50, 50, 25, 13, 12]).astype(np.int32)  # K 4 -> 6
    a = align_labels(more, prev)
    assert set(np.unique(a)) <= set(range(6))
    assert (a[:150] == prev[:150]).all() and len(np.unique(a)) == 6
    fewer = np.repeat([1, 0, 2, 2], 50).astype(np.int32)  # K 4 -> 3
    b = align_labels(fewer, prev)
    assert b.max() < 3 and (b[:100] == prev[:100]).all()


def test_agreement_metrics():
    truth = np.array([0, 0, 1, 1, 2, 2, -1])
    pred = np.array([5, 5, 3, 3, 3, 3, 1])
    ag = agreement_metrics(pred, truth)
    assert ag["n_rows"] == 6 and ag["purity"] == pytest.approx(4 / 6)
    assert agreement_metrics(truth, truth)["ari"] == pytest.approx(1.0)
    assert agreement_metrics(pred, np.full(7, -1)) is None


def test_cluster_store_writes_files_rounds_and_aligns(tmp_path, store):
    out = tmp_path / "r0" / "LABELS.npy"
    r0 = cluster_store(store, out=out, k=5, n_init=2, seed=3)
    assert (
        r0.path == out and out.with_suffix(".png").is_file() and r0.plot == out.with_suffix(".png")
    )
    labels, meta = read_label_file(out, store)
    assert labels[7] == -1 and (labels[np.arange(store.n_rows) != 7] >= 0).all()
    assert meta.round == 0 and meta.parent is None and len(meta.inertias) == 2
    assert r0.agreement["ari"] > 0.99 and meta.agreement == r0.agreement
    r1 = cluster_store(store.path, out=tmp_path / "r1.npy", k=5, n_init=2, seed=11, align_to=out)
    assert r1.meta.round == 1 and r1.meta.parent == str(out)
    assert r1.meta.alignment["same_id_fraction"] > 0.99
    assert (r1.labels == labels).mean() > 0.99
    other = make_store(tmp_path / "other", n=600, seed=5)
    other.update_attrs(fingerprint="f" * 32)
    with pytest.raises(LabelFileError, match="another store"):
        cluster_store(other, out=tmp_path / "x.npy", k=5, n_init=1, align_to=out)
    assert not (tmp_path / "x.npy").exists()
