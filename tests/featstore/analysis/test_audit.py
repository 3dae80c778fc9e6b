"""The audit's flags on stores with known problems, and the files it writes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from storefactory import make_class_store, precision_recall, write_store

from featstore.analysis import AuditConfig, audit_store, audit_summary_markdown, run_audit
from featstore.errors import InputError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_labels_are_found_with_80_percent_recall_and_precision(tmp_path, seed):
    made = make_class_store(tmp_path / "s.zarr", flip_frac=0.05, seed=seed, sep=1.2)
    assert made.flipped.size == 48
    res = run_audit(made.store, made.store.labels, config=AuditConfig(seed=seed))
    precision, recall = precision_recall(res.flag("likely_mislabeled"), made.flipped)
    assert recall >= 0.8 and precision >= 0.8, (precision, recall)
    # the suggested class is the row's true class
    hit = np.intersect1d(np.flatnonzero(res.flag("likely_mislabeled")), made.flipped)
    sug = res.classes[res.columns["suggested_class_index"][hit]]
    assert (sug == made.true_labels[hit]).mean() >= 0.9


def test_digits_halves_as_two_modalities(tmp_path):
    """Data we did not design: the top and bottom halves of sklearn's digits as audio and
    video, 5 % of labels flipped.  Each half alone is weak (~75 % probe accuracy), so this
    is a floor against regressions, not the acceptance bar (docs/analysis.md has the numbers)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flipped = np.sort(rng.choice(y.size, int(round(0.05 * y.size)), replace=False))
    lab = y.copy()
    lab[flipped] = (y[flipped] + rng.integers(1, 10, flipped.size)) % 10
    store = write_store(
        tmp_path / "d.zarr", X[:, :32].astype(np.float32), X[:, 32:].astype(np.float32), lab
    )
    res = run_audit(store, lab)
    precision, recall = precision_recall(res.flag("likely_mislabeled"), flipped)
    assert recall >= 0.75 and precision >= 0.65, (precision, recall)
    # the simplest baseline (flag every row the fused probe gets wrong) is far less precise
    base = res.columns["audio+video_probe"] != res.columns["class_index"]
    assert precision_recall(base, flipped)[0] < precision


@pytest.mark.parametrize(("sep", "min_precision"), [(2.5, 0.9), (1.5, 0.6)])
def test_modality_disagreement_finds_hybrid_clips(tmp_path, sep, min_precision):
    """Every hybrid is found; with weaker modalities (sep 1.5: ~10 % single-modality
    errors) clean clips whose one modality is confidently wrong are flagged too."""
    made = make_class_store(tmp_path / "s.zarr", flip_frac=0.0, n_hybrids=25, seed=4, sep=sep)
    res = run_audit(made.store, made.store.labels)
    flag = res.flag("modality_disagreement")
    precision, recall = precision_recall(flag, made.hybrids)
    assert recall >= 0.9 and precision >= min_precision, (precision, recall)
    assert not res.flag("likely_mislabeled")[
        made.hybrids
    ].any()  # audio still agrees with the label


def test_outliers_and_ambiguous(tmp_path):
    rng = np.random.default_rng(5)
    n = 400
    y = np.repeat(np.arange(4), n // 4)
    mean = np.array([[0, 0], [0.5, 0], [8, 8], [-8, 8]], float)
    audio = np.hstack([mean[y] + rng.normal(size=(n, 2)) * 0.5, rng.normal(size=(n, 2)) * 0.1])
    video = mean[y] + rng.normal(size=(n, 2)) * 0.5
    far = np.array([7, 123, 250])
    audio[far] += 60.0
    store = write_store(tmp_path / "o.zarr", audio, video, y)
    res = run_audit(store, y, config=AuditConfig(ambiguity_features="video"))
    assert set(far) <= set(np.flatnonzero(res.flag("outlier")))
    assert res.flag("outlier").sum() <= 3 + 4  # a clean Gaussian gives (almost) none
    amb = res.flag("ambiguous")
    # classes 0 and 1 overlap (centres 0.5 apart, spread 0.5); 2 and 3 stand alone
    assert amb[y <= 1].mean() > 0.5 and amb[y >= 2].mean() < 0.05
    assert set(res.columns["circle_class_a"][amb]) <= {0, 1}


def test_unlabelled_failed_rows_and_block_size_invariance(tmp_path):
    made = make_class_store(tmp_path / "s.zarr", flip_frac=0.05, seed=6, chunk_rows=32)
    labels = made.store.labels.astype(np.int64).copy()
    labels[:20] = -1
    a = run_audit(made.store, labels, config=AuditConfig(rows_per_block=32))
    b = run_audit(made.store, labels, config=AuditConfig(rows_per_block=4096))
    for k in ("likely_mislabeled", "modality_disagreement", "outlier", "ambiguous", "audio_probe"):
        np.testing.assert_array_equal(a.columns[k], b.columns[k])
    assert not a.flag("likely_mislabeled")[:20].any() and (a.columns["audio_probe"][:20] >= 0).all()


def test_files_and_demo_summary(tmp_path):
    made = make_class_store(tmp_path / "s.zarr", flip_frac=0.05, n_hybrids=10, seed=7)
    made.store.write_rows(
        0, embeddings={"audio": np.zeros((1, 16)), "video": np.zeros((1, 12))}, failed={0: "broken"}
    )
    doc = audit_store(made.store.path, out_dir=tmp_path / "out", ground_truth=True)
    out = tmp_path / "out"
    for f in ("audit.csv", "review.md", "audit.json", "flags_per_class.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0
    rows = list(csv.DictReader(open(out / "audit.csv")))
    assert (
        len(rows) == made.store.n_rows and rows[0]["audited"] == "0" and rows[1]["audited"] == "1"
    )
    saved = json.loads((out / "audit.json").read_text())
    assert saved["flags"]["likely_mislabeled"] == sum(r["likely_mislabeled"] == "1" for r in rows)
    assert (
        sum(c["likely_mislabeled"] for c in saved["per_class"])
        == saved["flags"]["likely_mislabeled"]
    )
    assert saved["rows_audited"] == made.store.n_rows - 1 and doc["flags"] == saved["flags"]
    review = (out / "review.md").read_text()
    for flag in ("likely_mislabeled", "modality_disagreement", "ambiguous", "outlier"):
        assert f"## {flag}" in review
    top = next(r for r in rows if r["likely_mislabeled"] == "1")
    assert top["suggested_class_name"] in made.store.class_names
    pair = saved["disagreement_pairs"][0]
    text = audit_summary_markdown(out / "audit.json", designed_pairs=[(pair["b"], pair["a"])])
    assert "modality_disagreement" in text and f"{pair['a']} / {pair['b']}" in text
    assert (
        f"{pair['count']} of {saved['flags']['modality_disagreement']} disagreement clips" in text
    )


def test_bad_input(tmp_path):
    made = make_class_store(tmp_path / "s.zarr", seed=8, per_class=10)
    with pytest.raises(InputError, match="at least 2 classes"):
        run_audit(made.store, np.zeros(made.store.n_rows, int))
    with pytest.raises(InputError, match="shape"):
        run_audit(made.store, np.zeros(3, int))
    with pytest.raises(InputError, match="no feature array 'bogus'"):
        run_audit(made.store, made.store.labels, config=AuditConfig(features=("audio", "bogus")))
    with pytest.raises(InputError, match="exactly one label source"):
        audit_store(made.store, out_dir=tmp_path / "o")


def test_cluster_label_file_extra_fused_array_and_missing_video(tmp_path):
    from featstore.labels.files import LabelFileMeta, write_label_file

    made = make_class_store(tmp_path / "s.zarr", flip_frac=0.05, seed=9, chunk_rows=32)
    store = made.store
    n = store.n_rows
    # a trainer-style fused array (NaN = not computed) and a few clips without video
    fused = np.concatenate(
        [store.read("audio", slice(None)), store.read("video", slice(None))], axis=1
    )
    fused[:5] = np.nan
    store.write_feature_array("fused", fused.astype(np.float32))
    missing = np.zeros(n, bool)
    missing[10:14] = True
    store.write_rows(
        0,
        embeddings={
            "audio": store.read("audio", slice(0, 32)),
            "video": store.read("video", slice(0, 32)),
        },
        missing={"video": missing[:32]},
    )
    meta = LabelFileMeta(
        k=8,
        inertia=0.0,
        inertias=[0.0],
        n_iter=1,
        seed=0,
        backend="test",
        features="audio+video",
        store_fingerprint=store.fingerprint,
        n_rows=n,
    )
    write_label_file(tmp_path / "labels.npy", store.labels.astype(np.int32), meta)
    doc = audit_store(
        store.path,
        out_dir=tmp_path / "out",
        labels_path=tmp_path / "labels.npy",
        config=AuditConfig(features=("audio", "video", "fused"), ambiguity_features="fused"),
    )
    res = doc["result"]
    assert res.class_names[0] == "cluster 0" and doc["labels"].endswith("labels.npy")
    # extra arrays count only for rows with both modalities (FeatureView's rule) and values
    no_fused = np.zeros(n, bool)
    no_fused[:5] = no_fused[10:14] = True
    assert (res.columns["fused_probe"][no_fused] == -1).all() and (
        res.columns["fused_probe"][~no_fused] >= 0
    ).all()
    assert (res.columns["video_probe"][10:14] == -1).all() and (
        res.columns["audio_probe"][10:14] >= 0
    ).all()
    assert not res.flag("modality_disagreement")[10:14].any()
    precision, recall = precision_recall(res.flag("likely_mislabeled"), made.flipped)
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)


def test_ambiguous_uses_the_confusion_degree_plane_and_circles(tmp_path):
    """The audit's circles equal those of confusion_from_store(keep_plane=True) on the same
    view: same plane (up to sign), same radii, same rows inside >= 2 circles."""
    from featstore.confusion import confusion_from_store

    made = make_class_store(tmp_path / "s.zarr", flip_frac=0.0, seed=11, sep=0.8)
    res = run_audit(made.store, made.store.labels)
    ref = confusion_from_store(made.store, made.store.labels, n_components=2, keep_plane=True)
    assert res.metrics["ambiguity"]["explained_variance_ratio"] == pytest.approx(
        ref.explained_variance_ratio, rel=1e-4
    )
    cent, r2 = ref.centroids[:, :2], ref.radii**2
    d2 = ((ref.plane[:, None, :] - cent[None, :, :]) ** 2).sum(axis=2)
    n_in = (d2 <= r2[None, :]).sum(axis=1)
    expected = np.zeros(made.store.n_rows, bool)
    expected[ref.rows] = n_in >= 2
    assert 0.2 < expected.mean() < 0.95  # a case with something to find
    agree = (res.flag("ambiguous") == expected).mean()
    assert agree >= 0.995, agree  # only rows on a circle's rim may differ (float32 rounding)


def test_progress_is_reported_as_data(tmp_path):
    made = make_class_store(tmp_path / "s.zarr", seed=12, per_class=20, chunk_rows=32)
    seen = []
    run_audit(
        made.store, made.store.labels, config=AuditConfig(rows_per_block=32), progress=seen.append
    )
    tasks = {u.task for u in seen}
    assert tasks == {"audit-fit", "audit-score"}
    for t in tasks:
        ups = [u for u in seen if u.task == t]
        assert ups[0].total == made.store.n_rows and ups[-1].done
        assert max(u.completed or 0 for u in ups) == made.store.n_rows


def test_csv_text_is_what_csv_writer_writes(tmp_path):
    """audit.csv is formatted column-wise for speed; it must stay byte-identical to
    csv.writer's output (quoting of ids/paths with commas, quotes and newlines; empty cells
    for NaN)."""
    import io

    from featstore.store.core import FeatureStore, ModalitySpec

    made = make_class_store(tmp_path / "s.zarr", flip_frac=0.05, seed=13, per_class=10)
    n = made.store.n_rows
    paths = [f"/data/clip{i}.mp4" for i in range(n)]
    paths[1], paths[2], paths[3] = "/d/a,b.mp4", '/d/say "hi".mp4', "/d/two\nlines.mp4"
    store = FeatureStore.create(
        tmp_path / "q.zarr",
        ids=[f"id,{i}" if i % 5 == 0 else f"c{i}" for i in range(n)],
        modalities={"audio": ModalitySpec("a", 16), "video": ModalitySpec("v", 12)},
        labels=made.store.labels,
        paths=paths,
        chunk_rows=64,
        dtype="float32",
    )
    store.write_rows(
        0,
        embeddings={
            "audio": made.store.read("audio", slice(None)),
            "video": made.store.read("video", slice(None)),
        },
    )
    audit_store(store.path, out_dir=tmp_path / "out", ground_truth=True)
    text = (tmp_path / "out" / "audit.csv").read_bytes().decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == n + 1 and rows[2][2] == "/d/a,b.mp4" and rows[4][2] == "/d/two\nlines.mp4"
    assert rows[3][2] == '/d/say "hi".mp4' and rows[1][1] == "id,0"
    again = io.StringIO(newline="")
    csv.writer(again).writerows(rows)
    assert again.getvalue() == text
    header = rows[0]
    assert "" in [r[header.index("mislabel_score")] for r in rows[1:]]  # NaN -> empty cell


def test_two_workers_give_the_one_worker_bits(tmp_path):
    """Workers split each block's per-fold products; every sum is still added in block
    order, so the columns are bit for bit those of one worker on one BLAS thread (data we
    did not design: sklearn's digits halves, 5 % of labels flipped)."""
    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(1)
    flipped = rng.choice(y.size, int(round(0.05 * y.size)), replace=False)
    lab = y.copy()
    lab[flipped] = (y[flipped] + rng.integers(1, 10, flipped.size)) % 10
    # standardised: integer pixels would make every float32 sum exact, in any order
    X = ((X - X.mean(0)) / np.maximum(X.std(0), 1e-12)).astype(np.float32)
    store = write_store(tmp_path / "d.zarr", X[:, :32], X[:, 32:], lab, chunk_rows=128)
    with threadpool_limits(1):
        one = run_audit(store, lab, config=AuditConfig(workers=1, rows_per_block=256))
    two = run_audit(store, lab, config=AuditConfig(workers=2, rows_per_block=256))
    assert one.columns.keys() == two.columns.keys()
    for k, a in one.columns.items():
        np.testing.assert_array_equal(two.columns[k], a, err_msg=k)
