"""The GPU benchmark suite run by ``scripts/gpu_check.sh``: every GPU path beside its CPU reference.

The GPU test machine is lent rarely and briefly, so this one script measures every
GPU path of diccae in one go, each next to a CPU reference measured in the same run
and with an agreement check, and writes what it has after every section (a run cut
short still leaves its numbers):

* ``kmeans``: batched restarts with the torch backend (tf32, bf16), the CuPy kernel,
  flash-kmeans (Triton) if installed, and scikit-learn's Lloyd loop on the CPU from
  the same initial centres;
* ``confusion``: the CuPy confusion-degree kernels against the NumPy path;
* ``trainer``: bf16 autocast against float32 steps/s, and the losses they reach;
* ``encoders``: r2plus1d_18 and r3d_18 (random weights) in bf16 and float32 on the GPU,
  and on the CPU;
* ``extract``: ``bench/extract.py`` end to end with 16 decode workers (needs PyAV).

``--dry-run`` runs every section at toy sizes on the CPU (CUDA-only parts are
skipped), then checks that every third-party module the check imported is either
on the GPU machine already or in ``scripts/gpu_wheels.txt``.  A CPU test runs it.

    python bench/gpu_suite.py --out OUTDIR [--dry-run] [--deadline-s 420]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Python distributions on the GPU test machine's image (docs of the device tool, 2026-11-17)
DEVICE_PREINSTALLED = set(
    """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio interface-meta iniconfig jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()
)
#: modules the real run imports only on the GPU machine (CUDA-only paths), checked by name
GPU_ONLY_IMPORTS = {
    "cupy": "cupy-cuda13x",
    "cupyx": "cupy-cuda13x",
    "flash_kmeans": "flash-kmeans",
    "triton": "triton",
}
OWN_PACKAGES = {"featstore", "trainer", "cli", "demo", "bench", "tests", "conftest", "gpu_suite"}
#: test modules with gpu-marked tests, found as scripts/gpu_check.sh finds them (moves can't hide one)
GPU_TEST_FILES = sorted(
    str(p.relative_to(ROOT))
    for top in ("tests/featstore", "tests/trainer")
    for p in (ROOT / top).rglob("*.py")
    if "mark.gpu" in p.read_text()
)


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def wheel_dists() -> set[str]:
    """Distribution names listed in scripts/gpu_wheels.txt (``name==version`` lines)."""
    out = set()
    for line in (ROOT / "scripts" / "gpu_wheels.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.add(norm(line.split("==")[0]))
    return out


# ------------------------------------------------------------------ recording
class Recorder:
    """Results as JSON + Markdown, rewritten after every section."""

    def __init__(self, out: Path, deadline_s: float, dry_run: bool):
        self.out = out
        self.t0 = time.perf_counter()
        self.deadline_s = deadline_s
        self.data: dict[str, Any] = {
            "dry_run": dry_run,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "sections": {},
        }
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline_s - (time.perf_counter() - self.t0)

    def section(self, name: str, fn, need_s: float) -> None:
        if self.left() < need_s:
            self.data["sections"][name] = {
                "status": f"skipped: {self.left():.0f} s left, needs ~{need_s:.0f} s"
            }
            print(f"== {name}: skipped (time)", flush=True)
            self.flush()
            return
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        t = time.perf_counter()
        res: dict[str, Any] = {}
        try:
            fn(res)
            res["status"] = "ok"
        except Exception as exc:  # a broken section must not cost the others
            res["status"] = f"error: {type(exc).__name__}: {exc}"
            res["traceback"] = traceback.format_exc()[-3000:]
            print(res["traceback"], flush=True)
        res["section_seconds"] = round(time.perf_counter() - t, 2)
        self.data["sections"][name] = res
        print(
            json.dumps({k: v for k, v in res.items() if k != "traceback"}, default=str)[:4000],
            flush=True,
        )
        self.flush()

    def flush(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=_jsonable))
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# GPU check ({'dry run, CPU' if data['dry_run'] else 'real run'}), {data['started']}",
        "",
    ]
    env = data.get("env", {})
    if env:
        lines += [f"- device: {env.get('device')}", f"- versions: {env.get('versions')}", ""]
    lines += ["| section | measurement | value |", "|---|---|---|"]
    for name, res in data["sections"].items():
        lines.append(f"| {name} | status | {res.get('status')} |")
        for key, val in res.items():
            if key in ("status", "traceback") or isinstance(val, (dict, list)):
                continue
            lines.append(
                f"| {name} | {key} | {val:.4g} |"
                if isinstance(val, float)
                else f"| {name} | {key} | {val} |"
            )
        for key, val in res.items():
            if isinstance(val, dict):
                for k2, v2 in val.items():
                    v2s = f"{v2:.4g}" if isinstance(v2, float) else str(v2)
                    lines.append(f"| {name} | {key}.{k2} | {v2s[:120]} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ helpers
def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> tuple[float, Any]:
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def exact_inertia(X: Any, C: Any) -> float:
    """Sum of squared distances to the nearest centre, float32 products (no TF32), float64 sum."""
    import torch

    C = torch.as_tensor(np.asarray(C, np.float32), device=X.device)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        total = 0.0
        c_sq = (C * C).sum(1)
        for s in range(0, X.shape[0], 65536):
            xb = X[s : s + 65536]
            d = (xb * xb).sum(1, keepdim=True) - 2 * xb @ C.T + c_sq[None]
            total += float(d.min(1).values.clamp_min(0).double().sum())
        return total
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# ------------------------------------------------------------------ sections
def env_info(rec: Recorder, gpu: bool) -> None:
    import torch

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    for mod in ("cupy", "sklearn", "scipy", "zarr", "av", "flash_kmeans", "triton"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as exc:
            versions[mod] = f"missing ({type(exc).__name__})"
    dev = torch.cuda.get_device_name(0) if gpu else f"CPU ({os.cpu_count()} cores)"
    rec.data["env"] = {
        "device": dev,
        "versions": versions,
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if gpu
        else None,
    }
    rec.flush()


def kmeans_section(res: dict, *, gpu: bool, size: dict) -> None:
    import torch

    from featstore.kmeans import KMeans, kmeans_plusplus

    n, d, k, r, iters = size["n"], size["d"], size["k"], size["restarts"], size["iters"]
    dev = "cuda" if gpu else "cpu"
    g = torch.Generator(device=dev).manual_seed(0)
    centers = torch.randn(2 * k, d, device=dev, generator=g)
    idx = torch.randint(0, 2 * k, (n,), device=dev, generator=g)
    X = centers[idx] + 0.8 * torch.randn(n, d, device=dev, generator=g)
    X /= X.norm(dim=1, keepdim=True)
    del centers, idx
    Xh = X.cpu().numpy()
    res.update(n=n, d=d, k=k, restarts=r, iters=iters)
    rs = np.random.RandomState(0)
    C0 = kmeans_plusplus(Xh[rs.choice(n, min(n, 10000), replace=False)], k, rs)

    def ours(prec: str, **kw: Any) -> Any:
        return KMeans(
            k,
            max_iter=kw.pop("max_iter", iters),
            tol=0.0,
            backend="torch",
            device=dev,
            precision=prec,
            **kw,
        ).fit(X)

    ours(
        "tf32" if gpu else "fp32", n_init=2, max_iter=2, random_state=1
    )  # warm-up: cuBLAS, allocator
    # same start, same iterations: CPU reference (scikit-learn's Lloyd loop, all cores)
    short = size["short_iters"]
    cpu_s, cpu = timed(
        lambda: KMeans(
            k, init=C0, n_init=1, max_iter=short, tol=0.0, backend="sklearn", device="cpu"
        ).fit(Xh)
    )
    res["cpu_sklearn_same_init"] = {
        "seconds": cpu_s,
        "iters": short,
        "inertia": cpu.inertia_,
        "s_per_iter": cpu_s / short,
    }
    for prec in ["fp32", "tf32", "bf16"] if gpu else ["fp32"]:
        s, km = timed(lambda p=prec: ours(p, init=C0, n_init=1, max_iter=short))
        res[f"gpu_{prec}_same_init"] = {
            "seconds": s,
            "inertia": km.inertia_,
            "rel_to_cpu": rel(km.inertia_, cpu.inertia_),
            "agrees_0.1pct": rel(km.inertia_, cpu.inertia_) <= 1e-3,
            "speedup_vs_cpu": cpu_s / s,
        }
    # the goal case: all restarts, batched, on every row
    for prec in ["tf32", "bf16"] if gpu else ["fp32"]:
        s, km = timed(lambda p=prec: ours(p, n_init=r, random_state=0))
        res[f"batched_{prec}"] = {
            "seconds": s,
            "seeding_seconds": getattr(km, "seeding_seconds_", None),
            "inertia": km.inertia_,
            "best_restart": km.best_restart_,
            "n_iter_best": km.n_iter_,
            "restart_sample": km.restart_sample_,
            "goal_5s": s <= 5.0,
            "inertias_min_max": [min(km.inertias_), max(km.inertias_)],
        }
        if gpu:
            torch.cuda.reset_peak_memory_stats()
    if gpu:
        res["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        a, b = res["batched_tf32"]["inertia"], res["batched_bf16"]["inertia"]
        res["bf16_vs_tf32_rel"] = rel(b, a)
        # CuPy kernel (one restart at a time, per-block host reduction), same start
        try:
            import cupy as cp

            Xc = cp.from_dlpack(X)
            s, km = timed(
                lambda: KMeans(
                    k, init=C0, n_init=1, max_iter=short, tol=0.0, backend="cupy", device="cuda"
                ).fit(Xc)
            )
            res["cupy_same_init"] = {
                "seconds": s,
                "inertia": km.inertia_,
                "rel_to_cpu": rel(km.inertia_, cpu.inertia_),
                "agrees_0.1pct": rel(km.inertia_, cpu.inertia_) <= 1e-3,
                "speedup_vs_cpu": cpu_s / s,
            }
        except Exception as exc:
            res["cupy_same_init"] = {"error": f"{type(exc).__name__}: {exc}"}
        # flash-kmeans (Triton), one run of `iters` iterations, against ours with one restart
        try:
            from flash_kmeans import FlashKMeans

            FlashKMeans(d=d, k=k, niter=2, tol=0.0, seed=0).fit(X)  # Triton compile + autotune
            s, fk = timed(lambda: FlashKMeans(d=d, k=k, niter=iters, tol=0.0, seed=0).fit(X))
            cent = fk.centroids_b[0].float()
            ours_s, one = timed(lambda: ours("tf32", n_init=1, random_state=0))
            res["flash_kmeans"] = {
                "seconds_one_run": s,
                "inertia": exact_inertia(X, cent.cpu().numpy()),
                "ours_one_run_tf32_s": ours_s,
                "ours_one_run_inertia": one.inertia_,
                "ours_batched_tf32_vs_flash_x20": res["batched_tf32"]["seconds"] / (20 * s),
            }
        except Exception as exc:
            res["flash_kmeans"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}


def confusion_section(res: dict, *, gpu: bool, size: dict) -> None:
    from featstore.confusion import confusion_degree

    n, d, c = size["n"], size["d"], size["c"]
    rng = np.random.default_rng(0)
    res.update(n=n, d=d, c=c)
    if gpu:
        import cupy as cp

        gen = cp.random.default_rng(0)
        y = gen.integers(0, c, n, dtype=cp.int64)
        cent = gen.standard_normal((c, d), dtype=cp.float32) * 0.35
        X = cent[y] + gen.standard_normal((n, d), dtype=cp.float32)
        confusion_degree(X[:20000], y[:20000], num_classes=c)  # compile the CUDA kernels

        def timed(**kw):
            """Best of 2 (the first full-size run also fills CuPy's memory pool)."""
            times = []
            for _ in range(2):
                cp.cuda.Stream.null.synchronize()
                t = time.perf_counter()
                out = confusion_degree(X, y, num_classes=c, **kw)
                cp.cuda.Stream.null.synchronize()
                times.append(time.perf_counter() - t)
            return out, min(times), times

        g, gpu_s, res["gpu_runs_s"] = timed()
        # the CPU's cache-sized blocks on the GPU: what the per-device default saves
        _, res["gpu_seconds_4096_row_blocks"], _ = timed(block_rows=4096)
        Xh, yh = cp.asnumpy(X), cp.asnumpy(y)
        del X, y
    else:
        yh = rng.integers(0, c, n)
        Xh = (rng.standard_normal((c, d)).astype(np.float32) * 0.35)[yh] + rng.standard_normal(
            (n, d), np.float32
        )
    t = time.perf_counter()
    ref = confusion_degree(Xh, yh, num_classes=c)
    cpu_s = time.perf_counter() - t
    res["cpu_seconds"] = cpu_s
    if gpu:
        from featstore.common.backend import to_numpy

        M, Mr = to_numpy(g.M), to_numpy(ref.M)
        ok = np.isfinite(Mr)
        scale = max(float(np.nanmax(np.abs(Mr))), 1e-12)
        res["gpu_seconds"] = gpu_s
        res["speedup"] = cpu_s / gpu_s
        res["goal_10x"] = cpu_s / gpu_s >= 10
        res["max_abs_diff_M_over_max"] = float(np.max(np.abs(M[ok] - Mr[ok]))) / scale
        gr, rr = to_numpy(g.radii), to_numpy(ref.radii)
        res["max_rel_diff_radii"] = float(
            np.nanmax(np.abs(gr - rr) / np.maximum(np.abs(rr), 1e-12))
        )
        res["agrees_1e-4"] = (
            res["max_abs_diff_M_over_max"] <= 1e-4 and res["max_rel_diff_radii"] <= 1e-4
        )
        res["nonzero_pairs"] = int(np.count_nonzero(Mr[ok] > 0))


def trainer_section(res: dict, *, gpu: bool, size: dict) -> None:
    import torch

    from trainer.build import build_model_and_loss, build_optimizer
    from trainer.config import TrainConfig

    dev = "cuda" if gpu else "cpu"
    n, dim, classes, steps = size["rows"], size["dim"], size["classes"], size["steps"]
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n,), generator=g)
    ca, cv = torch.randn(classes, dim, generator=g), torch.randn(classes, dim, generator=g)
    a = (ca[y] + 2.0 * torch.randn(n, dim, generator=g)).to(dev)
    v = (cv[y] + 2.0 * torch.randn(n, dim, generator=g)).to(dev)
    y = y.to(dev)
    held = n // 5
    w = torch.ones(classes, classes, device=dev)

    def run(batch: int, amp: bool, n_steps: int) -> dict[str, Any]:
        cfg = TrainConfig(batch_size=batch, progress=False)
        cfg.model.audio_dim = cfg.model.video_dim = dim
        cfg.model.num_classes = classes
        torch.manual_seed(0)
        model, loss = build_model_and_loss(cfg, dev)
        opt, _ = build_optimizer(cfg, list(model.parameters()) + list(loss.parameters()))
        for group in opt.param_groups:
            group["lr"] = 1e-3
        gen = torch.Generator(device=dev).manual_seed(1)
        losses = []

        def step() -> torch.Tensor:
            idx = torch.randint(held, n, (batch,), device=dev, generator=gen)
            ctx = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if amp
                else torch.autocast("cpu", enabled=False)
            )
            with ctx:
                out = model(a[idx], v[idx])
            total, _ = loss(out, y[idx], w)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            return total.detach()

        for _ in range(5):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(n_steps):
            losses.append(step())
        sync()
        secs = time.perf_counter() - t
        model.eval()
        with torch.no_grad():
            out = model(a[:held], v[:held])
            acc = float((out["logits_fused"].argmax(1) == y[:held]).float().mean())
        tail = torch.stack(losses[-max(1, n_steps // 5) :]).float().mean().item()
        return {"steps_per_s": n_steps / secs, "final_loss": tail, "heldout_top1_fused": acc}

    for batch in size["batches"]:
        fp32 = run(batch, False, steps)
        res[f"b{batch}_fp32"] = fp32
        if gpu:
            bf16 = run(batch, True, steps)
            res[f"b{batch}_bf16"] = bf16
            res[f"b{batch}_speedup_bf16"] = bf16["steps_per_s"] / fp32["steps_per_s"]
            res[f"b{batch}_loss_rel_diff"] = rel(bf16["final_loss"], fp32["final_loss"])
            res[f"b{batch}_top1_diff"] = bf16["heldout_top1_fused"] - fp32["heldout_top1_fused"]
    if gpu:  # the CPU reference at the first batch size
        a, v, y, w = a.cpu(), v.cpu(), y.cpu(), w.cpu()
        dev = "cpu"
        res["cpu_fp32"] = run(size["batches"][0], False, max(20, steps // 10))


def encoders_section(res: dict, *, gpu: bool, size: dict) -> None:
    import torch

    from featstore.extract.encoders import get_encoder

    rng = np.random.default_rng(0)
    batch = size["batch"]
    clips = [rng.integers(0, 255, (16, 112, 112, 3), dtype=np.uint8) for _ in range(batch)]
    for name in ("r2plus1d_18", "r3d_18"):
        out: dict[str, Any] = {}
        if gpu:
            enc = get_encoder(name, weights="random", device="cuda")
            enc.encode(clips)
            enc.encode(clips)
            s, e_bf16 = timed(lambda enc=enc: [enc.encode(clips) for _ in range(size["reps"])][-1])
            out["bf16_clips_per_s"] = batch * size["reps"] / s
            enc.amp_dtype = None
            enc.encode(clips)
            s, e_fp32 = timed(lambda enc=enc: [enc.encode(clips) for _ in range(size["reps"])][-1])
            out["fp32_clips_per_s"] = batch * size["reps"] / s
            cos = (e_bf16 * e_fp32).sum(1) / (
                np.linalg.norm(e_bf16, axis=1) * np.linalg.norm(e_fp32, axis=1)
            )
            out["bf16_vs_fp32_min_cosine"] = float(cos.min())
            out["bf16_speedup"] = out["bf16_clips_per_s"] / out["fp32_clips_per_s"]
            del enc
            torch.cuda.empty_cache()
        cpu = get_encoder(name, weights="random", device="cpu")
        few = clips[: size["cpu_clips"]]
        cpu.encode(few[:1])
        s, _ = timed(lambda cpu=cpu, few=few: cpu.encode(few))
        out["cpu_clips_per_s"] = len(few) / s
        if gpu:
            out["gpu_bf16_vs_cpu"] = out["bf16_clips_per_s"] / out["cpu_clips_per_s"]
        res[name] = out


def extract_section(res: dict, *, gpu: bool, size: dict, out_dir: Path, budget_s: float) -> None:
    try:
        import av  # noqa: F401
    except ImportError:
        res["note"] = "PyAV not installed: end-to-end extraction skipped"
        return
    js = out_dir / "extract.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "extract.py"),
        "--clips",
        str(size["clips"]),
        "--seconds",
        "2",
        "--workers",
        str(size["workers"]),
        "--batch-size",
        str(size["batch"]),
        "--chunk-rows",
        "64",
        "--video-encoder",
        "r3d_18",
        "--video-weights",
        "random",
        "--audio-encoder",
        "kaldi-fbank",
        "--device",
        "cuda" if gpu else "cpu",
        "--json",
        str(js),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, budget_s))
    res["stdout_tail"] = proc.stdout[-800:]
    if proc.returncode != 0:
        raise RuntimeError(f"bench/extract.py exit {proc.returncode}: {proc.stderr[-1500:]}")
    data = json.loads(js.read_text())
    rates = data["clips_per_s"]
    res.update({f"{k}_clips_per_s": v for k, v in rates.items()})
    res["ratio_to_slower_stage"] = data["ratio_to_slower_stage"]
    dec, enc = rates["decode_only"], rates["encode_only"]
    res["decode_share_of_serial_time"] = (1 / dec) / (1 / dec + 1 / enc)
    res["workers"] = size["workers"]


# ------------------------------------------------------------------ import coverage
def check_imports(res: dict) -> None:
    """Every third-party module imported so far is on the GPU machine or in the wheel list."""
    import importlib.metadata as md

    dists_of = md.packages_distributions()
    allowed = {norm(x) for x in DEVICE_PREINSTALLED} | wheel_dists()
    missing: dict[str, list[str]] = {}
    for mod in sorted({m.split(".")[0] for m in list(sys.modules)}):
        if (
            mod in sys.stdlib_module_names
            or mod in OWN_PACKAGES
            or mod.startswith(("_", "__editable__"))
        ):
            continue
        dists = [norm(x) for x in dists_of.get(mod, [])]
        if not dists or any(x in allowed for x in dists):
            continue
        missing[mod] = dists
    for mod, dist in GPU_ONLY_IMPORTS.items():
        if norm(dist) not in allowed:
            missing[mod] = [dist]
    res["wheels"] = sorted(wheel_dists())
    res["missing"] = missing
    if missing:
        raise RuntimeError(
            "imported on the way but neither on the GPU machine nor in scripts/gpu_wheels.txt: "
            + ", ".join(f"{m} ({'/'.join(d)})" for m, d in missing.items())
        )


def collect_gpu_tests() -> None:
    """Import the GPU test modules as pytest would (their imports count too)."""
    import pytest

    code = pytest.main(
        [
            "-q",
            "--collect-only",
            "-p",
            "no:cacheprovider",
            "-m",
            "gpu",
            *[str(ROOT / f) for f in GPU_TEST_FILES],
        ]
    )
    if code not in (0, 5):
        raise RuntimeError(f"collecting the GPU tests failed (pytest exit {code})")


# ------------------------------------------------------------------ main
SIZES = {
    "real": {
        "kmeans": {
            "n": 1_000_000,
            "d": 768,
            "k": 300,
            "restarts": 20,
            "iters": 50,
            "short_iters": 10,
        },
        "confusion": {"n": 2_000_000, "d": 512, "c": 300},
        "trainer": {
            "rows": 50_000,
            "dim": 768,
            "classes": 50,
            "steps": 300,
            "batches": [256, 4096],
        },
        "encoders": {"batch": 64, "reps": 5, "cpu_clips": 8},
        "extract": {"clips": 128, "workers": 16, "batch": 64},
    },
    "dry": {
        "kmeans": {"n": 3000, "d": 16, "k": 12, "restarts": 3, "iters": 5, "short_iters": 3},
        "confusion": {"n": 4000, "d": 16, "c": 12},
        "trainer": {"rows": 2000, "dim": 32, "classes": 8, "steps": 10, "batches": [64]},
        "encoders": {"batch": 2, "reps": 1, "cpu_clips": 1},
        "extract": {"clips": 4, "workers": 2, "batch": 4},
    },
}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="toy sizes on the CPU, then the import-coverage check",
    )
    ap.add_argument(
        "--deadline-s", type=float, default=420.0, help="skip sections that would end after this"
    )
    ap.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    args = ap.parse_args()
    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    if not gpu and not args.dry_run:
        print("no CUDA GPU visible: use --dry-run on a CPU machine", file=sys.stderr)
        return 5
    sizes = SIZES["dry" if args.dry_run else "real"]
    rec = Recorder(args.out, args.deadline_s, args.dry_run)
    env_info(rec, gpu)
    only = set(filter(None, args.only.split(",")))
    plan = [
        ("kmeans", lambda r: kmeans_section(r, gpu=gpu, size=sizes["kmeans"]), 60),
        ("confusion", lambda r: confusion_section(r, gpu=gpu, size=sizes["confusion"]), 40),
        ("trainer", lambda r: trainer_section(r, gpu=gpu, size=sizes["trainer"]), 30),
        ("encoders", lambda r: encoders_section(r, gpu=gpu, size=sizes["encoders"]), 40),
        (
            "extract",
            lambda r: extract_section(
                r, gpu=gpu, size=sizes["extract"], out_dir=args.out, budget_s=rec.left() - 10
            ),
            60,
        ),
    ]
    for name, fn, need in plan:
        if not only or name in only:
            rec.section(name, fn, need if gpu else 0)
    if args.dry_run:
        rec.section("gpu_tests_collect", lambda r: collect_gpu_tests(), 0)
        rec.section("import_coverage", check_imports, 0)
    bad = [
        n for n, r in rec.data["sections"].items() if str(r.get("status", "")).startswith("error")
    ]
    print(
        f"wrote {args.out / 'gpu_check.json'} and gpu_check.md; sections with errors: {bad or 'none'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
