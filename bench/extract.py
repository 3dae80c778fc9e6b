"""Benchmark: does extraction overlap decoding and encoding?

On the same generated clips, in one run, it measures

* decode-only throughput: the decode worker pool alone (``--workers`` processes);
* encode-only throughput: the encoders alone on clips decoded beforehand (main process);
* end to end: ``extract_rows`` into a fresh store (decode workers + batched encoding
  + chunk writes),

and prints the end-to-end rate as a fraction of the slower stage.  When decoding and
encoding run on different resources (decode on CPU cores, encode on a GPU), a
pipeline that overlaps them reaches close to 100 %; on a CPU-only machine both stages
share the same cores, so the ratio also shows how much one stage dominates.

    python bench/extract.py --clips 64 --workers 2
    python bench/extract.py --video-encoder r3d_18 --video-weights random --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.media import synthetic_audio, synthetic_frames, write_clip  # noqa: E402
from featstore.common.backend import resolve_device  # noqa: E402
from featstore.extract import (  # noqa: E402
    ExtractConfig,
    build_encoders,
    extract_rows,
    load_manifest,
    open_or_create_store,
    pending_ranges,
)
from featstore.extract.feed import DecodeFeed  # noqa: E402


def make_clips(folder: Path, n: int, seconds: float, fps: float, size: tuple[int, int]) -> Path:
    rows = []
    for i in range(n):
        frames = synthetic_frames(
            int(seconds * fps), *size, color=(40 * (i % 6), 200, 255 - 30 * (i % 8)), seed=i
        )
        audio = synthetic_audio(seconds, freq=200.0 + 50 * (i % 10), seed=i)
        write_clip(folder / f"clip{i:04d}.mp4", frames=frames, fps=fps, audio=audio)
        rows.append(f"clip{i:04d}.mp4,{i % 4}")
    manifest = folder / "manifest.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk-rows", type=int, default=16)
    ap.add_argument("--audio-encoder", default="kaldi-fbank")
    ap.add_argument("--video-encoder", default="frame-stats")
    ap.add_argument("--audio-weights", default="default")
    ap.add_argument("--video-weights", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    none = lambda v: None if v == "none" else v  # noqa: E731
    config = ExtractConfig(
        audio_encoder=none(args.audio_encoder),
        video_encoder=none(args.video_encoder),
        audio_weights=args.audio_weights,
        video_weights=args.video_weights,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        chunk_rows=args.chunk_rows,
    )
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        manifest_path = make_clips(
            tmp / "clips", args.clips, args.seconds, args.fps, tuple(args.size)
        )
        print(
            f"generated {args.clips} clips ({args.seconds:.0f} s, {args.size[1]}x{args.size[0]} @ {args.fps:g} fps) "
            f"in {time.perf_counter() - t:.1f} s"
        )
        manifest = load_manifest(manifest_path)
        encoders = build_encoders(config, device)
        rows = list(range(len(manifest)))

        # warm-up: first calls pay library initialisation, not throughput
        warm = next(
            iter(
                DecodeFeed(
                    manifest, rows[:1], encoders, ExtractConfig(**{**config.__dict__, "workers": 0})
                )
            )
        )
        for m, enc in encoders.items():
            enc.encode([warm[1].video if m == "video" else warm[1].audio])

        # 1. decode only (worker pool, same window as the pipeline)
        t = time.perf_counter()
        decoded = list(DecodeFeed(manifest, rows, encoders, config))
        decode_s = time.perf_counter() - t
        failed = [r for r, clip, why in decoded if clip is None]
        if failed:
            raise SystemExit(
                f"{len(failed)} generated clips failed to decode: {decoded[failed[0]][2]}"
            )

        # 2. encode only (batched like the pipeline)
        t = time.perf_counter()
        for m, enc in encoders.items():
            items = [clip.video if m == "video" else clip.audio for _, clip, _ in decoded]
            for i in range(0, len(items), args.batch_size):
                enc.encode(items[i : i + args.batch_size])
        encode_s = time.perf_counter() - t
        del decoded

        # 3. end to end
        store = open_or_create_store(tmp / "store", manifest, encoders, config)
        t = time.perf_counter()
        extract_rows(store, manifest, pending_ranges(store), config, encoders=encoders)
        e2e_s = time.perf_counter() - t

    n = len(rows)
    rates = {"decode_only": n / decode_s, "encode_only": n / encode_s, "end_to_end": n / e2e_s}
    slower = min(rates["decode_only"], rates["encode_only"])
    ratio = rates["end_to_end"] / slower
    result = {
        "clips": n,
        "workers": args.workers,
        "device": device,
        "cpu_count": os.cpu_count(),
        "audio_encoder": args.audio_encoder,
        "video_encoder": args.video_encoder,
        "clips_per_s": rates,
        "ratio_to_slower_stage": ratio,
        "ideal_serial_ratio": (1 / (1 / rates["decode_only"] + 1 / rates["encode_only"])) / slower,
    }
    print(
        f"encoders: audio={args.audio_encoder} video={args.video_encoder} on {device}; "
        f"{args.workers} decode workers; {os.cpu_count()} CPUs"
    )
    for k, v in rates.items():
        print(f"  {k:<12} {v:8.2f} clips/s")
    print(
        f"end-to-end / slower stage = {ratio:.2f}  (aim >= 0.85; no overlap at all would give "
        f"{result['ideal_serial_ratio']:.2f})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
