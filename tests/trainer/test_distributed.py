"""DistributedDataParallel: N ranks take the same steps as one process (same global batch, seed).

The expensive test spawns 2 gloo ranks on CPU once (about 20-40 s on 2 shared
cores); everything else runs in-process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from trainer_synth import make_store

from featstore.errors import InputError
from featstore.labels import cluster_store, read_label_file
from featstore.store.features import open_run_features
from trainer.config import TrainConfig
from trainer.data import BatchPicker, StoreSource, iter_batches
from trainer.distributed import GlobalBatchDropout, use_global_batch_dropout
from trainer.global_batches import iter_global_batches
from trainer.launch import launch_local
from trainer.model import DiccaeModel
from trainer.phases import pretrain
from trainer.rows import usable_mask
from trainer.run_io import load_checkpoint, read_metrics

dist = pytest.importorskip("torch.distributed")
needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

# float32 sums in another order (DDP's all-reduce, per-rank matmuls): a few ulps per
# step; over 3 epochs x 10 Adam steps the weights stay within ~1e-6 of each other.
WEIGHT_ATOL = 1e-5
METRIC_RTOL = 1e-5
CONFUSION_ATOL = 5e-6  # measured |diff| up to 4.3e-7 on make_store seeds 0-3


def _clear_assignments(z: np.ndarray, labels: np.ndarray, *, rel_margin: float) -> np.ndarray:
    """Rows whose nearest cluster centre beats the second by more than ``rel_margin``."""
    clear = np.zeros(len(labels), bool)
    ok = (labels >= 0) & ~np.isnan(z).any(1)
    zz, lab = z[ok].astype(np.float64), labels[ok]
    centres = np.stack([zz[lab == c].mean(0) for c in np.unique(lab)])
    d = np.sort(np.linalg.norm(zz[:, None, :] - centres[None], axis=-1), axis=1)
    clear[ok] = (d[:, 1] - d[:, 0]) > rel_margin * d[:, 1]
    return clear


def small_config(**over) -> TrainConfig:
    cfg = TrainConfig(
        epochs=3,
        lr=3e-3,
        progress=False,
        recluster_every=2,
        recluster_n_init=1,
        batch_size=16,
        shuffle_buffer=48,
        clips_per_class=4,
        threads=1,
        plots=False,
        device="cpu",
        passes_per_epoch=1,
    )
    cfg.model.encoder_widths = (32,)
    cfg.model.encoded_dim = 16
    cfg.model.fusion_widths = (32,)
    cfg.model.fused_dim = 16
    cfg.model.projection_dim = 8
    cfg.loss.learn_temperature = True  # a learnable loss parameter must stay in sync too
    return cfg.with_overrides(**over)


@pytest.mark.parametrize("sampler", ["balanced", "confusion", "shuffle"])
def test_ranks_together_see_exactly_the_single_process_batches(tmp_path, sampler):
    store = make_store(tmp_path / "s.zarr", chunk_rows=16)
    source = StoreSource(store)
    labels = np.asarray(store.labels, np.int64)
    mask = usable_mask(store, labels)
    mask[::7] = False

    def picker():
        return BatchPicker(
            sampler, batch_size=16, clips_per_class=4, num_classes=4, pair_weights=np.ones((4, 4))
        )

    ref = list(iter_batches(source, mask, labels, picker(), seed=3, epoch=2, buffer_rows=40))
    for world in (2, 3):
        per_rank = [
            list(
                iter_global_batches(
                    source,
                    mask,
                    labels,
                    picker(),
                    seed=3,
                    epoch=2,
                    buffer_rows=40,
                    rank=r,
                    world_size=world,
                )
            )
            for r in range(world)
        ]
        assert [len(p) for p in per_rank] == [len(ref)] * world
        read_rows = [set() for _ in range(world)]
        for step, (rows, y, audio, video) in enumerate(ref):
            got_a, got_v = np.zeros_like(audio), np.zeros_like(video)
            covered = np.zeros(len(rows), int)
            for r in range(world):
                b = per_rank[r][step]
                assert np.array_equal(b.rows, rows) and np.array_equal(b.labels, y)
                got_a[b.local], got_v[b.local] = b.audio, b.video
                covered[b.local] += 1
                read_rows[r].update(rows[b.local].tolist())
            assert (covered == 1).all()  # every row computed by exactly one rank
            np.testing.assert_array_equal(got_a, audio)
            np.testing.assert_array_equal(got_v, video)
        # shards are split: no row's features are read by two ranks
        assert sum(len(s) for s in read_rows) == len(set().union(*read_rows))


def test_global_batch_dropout_reproduces_the_full_batch_mask():
    x = torch.randn(10, 7)
    torch.manual_seed(5)
    full = torch.nn.functional.dropout(x, p=0.3, training=True)
    drop = GlobalBatchDropout(0.3)
    positions = torch.tensor([1, 4, 5, 9])
    drop.batch_rows, drop.positions = 10, positions
    torch.manual_seed(5)
    part = drop(x[positions])
    torch.testing.assert_close(part, full[positions], rtol=0, atol=0)
    drop.eval()
    assert torch.equal(drop(x), x)


def test_dropout_swap_keeps_the_checkpoint_format():
    cfg = small_config().model
    cfg.audio_dim, cfg.video_dim, cfg.num_classes = 12, 10, 4
    model = DiccaeModel(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped = use_global_batch_dropout(model)
    assert len(swapped) == 3  # audio, video, fusion MLPs
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@needs_gloo
def test_two_rank_gloo_run_matches_single_process_and_resumes_on_one(tmp_path, monkeypatch):
    """2 DDP ranks for epochs 1-2 (re-clustering at 2), resumed by 1 process for epoch 3.

    Against a single-process run of all 3 epochs: same metrics, same label round,
    same final weights (model, InfoNCE temperature, confusion s/b) within tolerance.
    """
    monkeypatch.setenv("DICCAE_DIST_TIMEOUT_S", "180")  # a hung rank fails the test instead of CI
    store = make_store(tmp_path / "s.zarr", chunk_rows=16)
    round0 = cluster_store(store, out=tmp_path / "round0.npy", k=6, n_init=1, plot=False)
    one = pretrain(
        tmp_path / "s.zarr",
        labels_path=round0.path,
        out_dir=tmp_path / "one",
        config=small_config(),
    )

    summary = launch_local(
        "pretrain",
        2,
        store_path=tmp_path / "s.zarr",
        labels_path=round0.path,
        out_dir=tmp_path / "two",
        config=small_config(),
        stop_after=2,
    )
    assert [r["epoch"] for r in summary.metrics] == [1, 2]
    info = json.loads((tmp_path / "two" / "distributed.json").read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo" and info["global_batch_size"] == 16
    two = pretrain(
        tmp_path / "s.zarr",
        labels_path=round0.path,
        out_dir=tmp_path / "two",
        config=small_config(),
        resume=True,
    )

    ref, got = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["epoch"] for r in got] == [1, 2, 3]
    n_eval = json.loads((tmp_path / "one" / "config.json").read_text())["rows"]["eval"]
    for r_ref, r_got in zip(ref, got, strict=True):
        assert r_got["steps"] == r_ref["steps"] and r_got["label_round"] == r_ref["label_round"]
        for key, value in r_ref.items():
            if key.startswith("loss_"):
                assert r_got[key] == pytest.approx(value, rel=METRIC_RTOL, abs=1e-7), (
                    r_ref["epoch"],
                    key,
                )
            elif key.startswith(("confusion_", "mhat_")):
                # M = max(0, r_i + r_j - d_ij) / d_ij cancels O(1) terms: its error is absolute,
                # not relative to a small mean (seed 3: rel 1.9e-5 on a mean of 0.014).
                assert r_got[key] == pytest.approx(value, rel=METRIC_RTOL, abs=CONFUSION_ATOL), (
                    r_ref["epoch"],
                    key,
                )
            elif key.startswith("top1_"):
                # argmax of logits from weights ~1e-6 apart: a row on a near-tie may flip
                assert value * n_eval == pytest.approx(
                    round(value * n_eval)
                )  # n_eval is the count scored
                assert abs(r_got[key] - value) * n_eval <= 1 + 1e-9, (r_ref["epoch"], key)

    # re-clustered on rank 0 into the same round-1 labels: every row that is not on a
    # near-tie between two centres (relative margin < 1e-4, far above the ~1e-6 drift)
    lab_one, meta = read_label_file(one.label_rounds[1], store=store)
    lab_two, _ = read_label_file(two.label_rounds[1], store=store)
    fused = np.asarray(
        open_run_features(meta.features, store)[:]
    )  # the run's fused features (RUN/fused)
    clear = _clear_assignments(fused, lab_one, rel_margin=1e-4)
    assert clear.mean() >= 0.99, "the test data should have few near-tie rows"
    assert np.array_equal(lab_one[clear], lab_two[clear])

    a, b = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    for part in ("model", "loss"):
        for key in a[part]:
            torch.testing.assert_close(
                b[part][key], a[part][key], rtol=0, atol=WEIGHT_ATOL, msg=f"{part}.{key}"
            )
    assert float(a["loss"]["infonce.logit_scale"]) != pytest.approx(
        np.log(1 / 0.07)
    )  # it was learned
    torch.testing.assert_close(b["pair_weights"], a["pair_weights"], rtol=0, atol=1e-5)
    # only rank 0 wrote: one metrics file without duplicated epochs, no stray temp files
    assert not list((tmp_path / "two").glob(".*.tmp"))


def test_nproc_must_be_positive(tmp_path):
    with pytest.raises(InputError, match="nproc"):
        launch_local(
            "pretrain",
            0,
            store_path=tmp_path,
            labels_path=None,
            out_dir=tmp_path / "x",
            config=small_config(),
        )


def test_cli_refuses_bad_nproc_and_python_m_trainer_needs_a_phase(tmp_path, small_store):
    from cli.main import main
    from trainer.__main__ import run

    rc = main(
        [
            "train",
            "finetune",
            str(small_store.path),
            "--out",
            str(tmp_path / "r"),
            "--nproc",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 2 and not (tmp_path / "r").exists()
    assert run([]) == 2 and run(["eval"]) == 2


def test_a_rank_error_comes_back_with_its_type_and_exit_code(tmp_path):
    from featstore.errors import DiccaeError, LabelFileError
    from trainer.launch import raise_rank_error as _raise_rank_error

    (tmp_path / "error_rank1.json").write_text(
        json.dumps({"type": "LabelFileError", "message": "r0.npy: other store"})
    )
    with pytest.raises(LabelFileError, match="other store") as info:
        _raise_rank_error(tmp_path, RuntimeError("process 1 terminated with exit code 1"))
    assert info.value.exit_code == 2
    with pytest.raises(DiccaeError, match="a training process failed"):
        _raise_rank_error(tmp_path / "nothing", RuntimeError("killed"))
