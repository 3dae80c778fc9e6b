"""Training steps/s fed from store shards vs from in-memory tensors (same model, same run).

The trainer streams shuffled shards through a background-prefetched shuffle
buffer and a P x K sampler.  The reference is the ideal case: every row already
a float32 tensor in memory, batches cut from a random permutation.  Aim: the
store path costs <= 10% of the in-memory steps/s.

    python bench/train_io.py [--rows 16384] [--audio-dim 768] [--video-dim 768] [--steps 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from featstore.store.core import FeatureStore, ModalitySpec
from trainer.build import build_model_and_loss, build_optimizer
from trainer.config import TrainConfig
from trainer.data import BatchPicker, StoreSource, iter_batches


def make_store(path: Path, rows: int, da: int, dv: int, classes: int, chunk: int) -> FeatureStore:
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, rows)
    store = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(rows)],
        labels=y,
        chunk_rows=chunk,
        dtype="float16",
        modalities={"audio": ModalitySpec("bench", da), "video": ModalitySpec("bench", dv)},
        splits=["train"] * rows,
        source="bench",
    )
    for s, e in store.shard_ranges():
        store.write_rows(
            s,
            embeddings={
                "audio": rng.normal(size=(e - s, da)).astype(np.float16),
                "video": rng.normal(size=(e - s, dv)).astype(np.float16),
            },
        )
    return store


def build(cfg: TrainConfig):
    torch.manual_seed(0)
    model, loss = build_model_and_loss(cfg, "cpu")
    opt, _ = build_optimizer(cfg, list(model.parameters()) + list(loss.parameters()))
    return model, loss, opt


def step(model, loss, opt, a, v, y, w):
    total, _ = loss(model(a, v), y, w)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def run_memory(cfg, audio, video, labels, steps, w) -> float:
    model, loss, opt = build(cfg)
    a_all, v_all = (
        torch.from_numpy(audio.astype(np.float32)),
        torch.from_numpy(video.astype(np.float32)),
    )
    y_all = torch.from_numpy(labels)
    perm = torch.randperm(len(labels))
    t = time.perf_counter()
    for i in range(steps):
        idx = perm[(i * cfg.batch_size) % (len(labels) - cfg.batch_size) :][: cfg.batch_size]
        step(model, loss, opt, a_all[idx], v_all[idx], y_all[idx], w)
    return steps / (time.perf_counter() - t)


def run_store(cfg, store, labels, steps, w, prefetch: int, with_model: bool = True) -> float:
    model, loss, opt = build(cfg)
    source = StoreSource(store)
    picker = BatchPicker(
        "balanced",
        batch_size=cfg.batch_size,
        clips_per_class=cfg.clips_per_class,
        num_classes=cfg.model.num_classes,
    )
    mask = store.valid_rows()
    done, epoch = 0, 0
    t = time.perf_counter()
    while done < steps:
        for _r, y, a, v in iter_batches(
            source,
            mask,
            labels,
            picker,
            seed=0,
            epoch=epoch,
            buffer_rows=cfg.shuffle_buffer,
            prefetch=prefetch,
        ):
            if with_model:
                step(
                    model,
                    loss,
                    opt,
                    torch.from_numpy(a).float(),
                    torch.from_numpy(v).float(),
                    torch.from_numpy(y),
                    w,
                )
            done += 1
            if done >= steps:
                break
        epoch += 1
    return done / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--audio-dim", type=int, default=768)
    ap.add_argument("--video-dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(batch_size=args.batch_size, progress=False)
    cfg.model.audio_dim, cfg.model.video_dim, cfg.model.num_classes = (
        args.audio_dim,
        args.video_dim,
        args.classes,
    )
    w = torch.ones(args.classes, args.classes)
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(
            Path(tmp) / "bench.zarr",
            args.rows,
            args.audio_dim,
            args.video_dim,
            args.classes,
            args.chunk_rows,
        )
        labels = store.labels.astype(np.int64)
        audio, video = store.read("audio", slice(None)), store.read("video", slice(None))
        run_memory(cfg, audio, video, labels, 20, w)  # warm-up (allocator, kernels)
        results = {}
        for _rep in range(2):  # interleave to even out noise from other processes
            results.setdefault("memory", []).append(
                run_memory(cfg, audio, video, labels, args.steps, w)
            )
            results.setdefault("store", []).append(
                run_store(cfg, store, labels, args.steps, w, prefetch=cfg.prefetch_shards)
            )
            results.setdefault("store_no_prefetch", []).append(
                run_store(cfg, store, labels, args.steps, w, prefetch=0)
            )
        loader = run_store(
            cfg, store, labels, args.steps * 4, w, prefetch=cfg.prefetch_shards, with_model=False
        )
    best = {k: max(v) for k, v in results.items()}
    print(
        f"rows={args.rows} audio_dim={args.audio_dim} video_dim={args.video_dim} batch={args.batch_size} "
        f"chunk_rows={args.chunk_rows} threads={args.threads} steps={args.steps} (best of 2)"
    )
    print(f"in-memory tensors         : {best['memory']:8.1f} steps/s")
    print(
        f"store, prefetch thread    : {best['store']:8.1f} steps/s  ({100 * (1 - best['store'] / best['memory']):+.1f}% cost)"
    )
    print(
        f"store, no prefetch        : {best['store_no_prefetch']:8.1f} steps/s  ({100 * (1 - best['store_no_prefetch'] / best['memory']):+.1f}% cost)"
    )
    print(f"store loader alone        : {loader:8.1f} batches/s (no model step)")
    print(f"ratio store/in-memory     : {best['store'] / best['memory']:.3f}  (aim >= 0.90)")


if __name__ == "__main__":
    main()
