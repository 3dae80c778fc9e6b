"""Benchmark: extraction on Dask with 1 and 2 workers against the single-process path.

On the same generated clips, in one run, it measures

* ``single, in-process``  - ``featstore.extract.pipeline.extract`` with ``workers=0`` (decode
  and encode in one process): the reference for the Dask overhead, because a Dask
  worker task also decodes in its own process (see featstore/extract/dask.py);
* ``single, --workers N`` - the default single-machine path (decode processes feeding
  the encoder), the figure to beat on one machine;
* ``dask, 1 worker`` and ``dask, 2 workers`` - ``extract_dask`` on a LocalCluster of
  single-threaded worker processes, with the cluster already started and the
  workers warmed up (torch and the encoders imported); start-up is reported apart.

and prints clips/s, the Dask speed-up (2 workers / 1 worker) and the Dask overhead
(time with 1 worker / single in-process time - 1).  Every Dask store is checked to
equal the single-process store.

    python bench/scale.py                        # 48 clips, 2 s each, 240x320, chunk 4
    python bench/scale.py --clips 96 --chunk-rows 8 --json scale.json

On a shared machine the numbers are noisy: run it twice and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract import make_clips  # noqa: E402  (bench/extract.py: the same generated clips)

from featstore.extract.dask import extract_dask  # noqa: E402
from featstore.extract.pipeline import ExtractConfig, extract  # noqa: E402
from featstore.store.core import FeatureStore  # noqa: E402


def same_store(a: Path, b: Path) -> bool:
    sa, sb = FeatureStore.open(a), FeatureStore.open(b)
    return sa.array_names() == sb.array_names() and all(
        np.array_equal(np.asarray(sa.array(n)[:]), np.asarray(sb.array(n)[:]))
        for n in sa.array_names()
    )


def _warm(warm_manifest: str, config: ExtractConfig) -> str:
    """Build the worker's encoders and run them once, as the single path is warmed.

    The timed run then measures extraction, not imports and first-call set-up.
    """
    from featstore.common.backend import resolve_device
    from featstore.extract.dask import worker_encoders

    worker_encoders(config, resolve_device(config.device))
    with tempfile.TemporaryDirectory() as d:
        extract(warm_manifest, Path(d) / "warm.zarr", config)
    return "ok"


def run_dask(manifest: Path, out: Path, config: ExtractConfig, n_workers: int, warm: Path) -> dict:
    import distributed

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(n_workers)
            client.run(_warm, str(warm), config)
            startup = time.perf_counter() - t0
            t1 = time.perf_counter()
            summary = extract_dask(
                manifest, out, config, scheduler=f"local:{n_workers}", client=client
            )
            seconds = time.perf_counter() - t1
    finally:
        cluster.close()
    return {
        "seconds": seconds,
        "startup_s": startup,
        "clips": summary.n_processed,
        "tasks": summary.n_tasks,
        "workers_used": len(summary.workers_used),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    ap.add_argument("--chunk-rows", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument(
        "--workers", type=int, default=2, help="decode processes of the single-machine path"
    )
    ap.add_argument("--audio-encoder", default="kaldi-fbank")
    ap.add_argument("--video-encoder", default="frame-stats")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    base = dict(
        audio_encoder=args.audio_encoder,
        video_encoder=args.video_encoder,
        chunk_rows=args.chunk_rows,
        batch_size=args.batch_size,
        device="cpu",
    )
    with tempfile.TemporaryDirectory(prefix="diccae-bench-scale-") as tmp:
        tmp = Path(tmp)
        clips = tmp / "clips"
        clips.mkdir()
        t = time.perf_counter()
        manifest = make_clips(clips, args.clips, args.seconds, args.fps, tuple(args.size))
        print(
            f"generated {args.clips} clips ({args.seconds:.0f} s, {args.size[0]}x{args.size[1]}) "
            f"in {time.perf_counter() - t:.1f} s; chunk_rows={args.chunk_rows}"
        )

        # warm this process too (torch, encoders, PyAV), as the Dask workers are warmed
        warm = tmp / "warm.csv"
        warm.write_text(
            "\n".join(manifest.read_text().splitlines()[:3]).replace("clip", str(clips) + "/clip")
            + "\n"
        )
        extract(warm, tmp / "warm.zarr", ExtractConfig(workers=0, **base))
        results: dict[str, dict] = {}
        for name, workers in (
            ("single, in-process", 0),
            (f"single, --workers {args.workers}", args.workers),
        ):
            out = tmp / f"single{workers}.zarr"
            t = time.perf_counter()
            s = extract(manifest, out, ExtractConfig(workers=workers, **base))
            results[name] = {
                "seconds": time.perf_counter() - t,
                "clips": s.n_processed,
                "store": out,
            }
        ref = results["single, in-process"]["store"]
        for n in (1, 2):
            out = tmp / f"dask{n}.zarr"
            r = run_dask(manifest, out, ExtractConfig(workers=0, **base), n, warm)
            r["equal"] = same_store(ref, out)
            r["store"] = out
            results[f"dask, {n} worker{'s' if n > 1 else ''}"] = r

    single = results["single, in-process"]["seconds"]
    d1, d2 = results["dask, 1 worker"]["seconds"], results["dask, 2 workers"]["seconds"]
    print(
        f"\n{'path':<24}{'seconds':>9}{'clips/s':>9}{'vs single':>11}{'start-up s':>12}{'equal':>7}"
    )
    for name, r in results.items():
        rate = r["clips"] / r["seconds"]
        start = f"{r['startup_s']:.1f}" if "startup_s" in r else "-"
        eq = str(r.get("equal", "ref")) if name.startswith("dask") else "ref"
        print(
            f"{name:<24}{r['seconds']:>9.2f}{rate:>9.2f}{single / r['seconds']:>10.2f}x{start:>12}{eq:>7}"
        )
    speedup = d1 / d2
    overhead = d1 / single - 1
    load = os.getloadavg()
    print(
        f"\nload average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores"
    )
    print(f"Dask speed-up, 2 workers vs 1: {speedup:.2f}x")
    print(
        f"Dask overhead, 1 worker vs single in-process: {100 * overhead:+.1f}% "
        f"(cluster start-up and warm-up, not included above: {results['dask, 1 worker']['startup_s']:.1f} s "
        f"for 1 worker, {results['dask, 2 workers']['startup_s']:.1f} s for 2)"
    )
    if args.json:
        out = {k: {kk: vv for kk, vv in v.items() if kk != "store"} for k, v in results.items()}
        out["speedup_2_vs_1"] = speedup
        out["overhead_1_vs_single"] = overhead
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
