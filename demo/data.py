"""A small synthetic audio-visual data set in which each modality alone is ambiguous.

The demo must show, on a laptop and without downloads, what DICCAE is for: some
classes can only be told apart by combining audio and video.  So the classes come in
groups of four:

* two classes that **look alike** (same coloured object, same motion, same
  background) but **sound different** (different tone and noise band);
* two classes that **sound alike** but **look different**.

A video-only model therefore confuses the first pair, an audio-only model the
second, and only a fused model can separate all classes.  Classes left over when the
count is not a multiple of four are distinct in both modalities.

Every clip is a real MP4 (H.264 video + AAC audio) written with
:func:`demo.media.write_clip`, so the demo runs the genuine decode/extract path.
Per-clip randomness (trajectory phase, position, speed, colour and size jitter,
pixel noise; tone detuning, loudness, phase, noise level, onset) keeps the task from
being trivial, and a fraction of clips (8% by default) get one modality badly
degraded, which is where a fused model earns its keep; few enough that the 95%
circles of Eq. 2 treat them as the outliers the paper's coverage rule leaves out.
Generation is deterministic under ``seed``: each clip draws from its own
``numpy.random.default_rng((seed, clip_index))``.

The class design lives in :mod:`demo.design`, the synthesis of one clip's frames and
waveform in :mod:`demo.synth`; this module writes the clips, the manifest and the
design file.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from demo.design import DemoDesign, demo_design
from demo.synth import render_audio, render_frames
from featstore.errors import InputError
from featstore.progress import ProgressFn, ProgressTask

SPLITS = ("train", "val", "test")
DESIGN_FILE = "demo_classes.json"


def _split_assignment(
    n_per_class: list[int], fractions: tuple[float, float, float], rng: np.random.Generator
) -> list[list[str]]:
    """Per class, a shuffled list of split names with the requested proportions."""
    out = []
    for n in n_per_class:
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        n_train = n - n_val - n_test
        if n >= 3 and min(n_train, n_val, n_test) < 1:
            n_train, n_val, n_test = n - 2, 1, 1
        names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        rng.shuffle(names)
        out.append(names)
    return out


def make_demo_dataset(
    out_dir: str | Path,
    *,
    n_clips: int = 480,
    n_classes: int = 8,
    seed: int = 0,
    duration: float = 1.5,
    size: int = 64,
    fps: float = 12.0,
    sample_rate: int = 16000,
    degrade_prob: float = 0.08,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    progress: ProgressFn | None = None,
) -> Path:
    """Write ``n_clips`` MP4 clips under ``out_dir/clips`` and return the manifest path.

    The manifest ``out_dir/manifest.csv`` has the columns ``path,label,split,id`` with
    paths relative to ``out_dir`` and labels as class names; ``out_dir/demo_classes.json``
    records the design (which pairs look or sound alike).  Splits are stratified per
    class.  Rerunning with the same arguments reproduces the same decoded content.
    ``progress`` receives one ``clips`` task (done/total and clips/s); ``None`` is silent.
    """
    from demo.media import write_clip  # the one MP4 writer of the project

    if n_clips < 2 * n_classes:
        raise InputError(
            f"need at least 2 clips per class: {n_clips} clips for {n_classes} classes"
        )
    if size < 16 or size % 2:
        raise InputError(f"frame size must be an even number >= 16, got {size}")
    if not abs(sum(split_fractions) - 1.0) < 1e-6:
        raise InputError(f"split fractions must sum to 1, got {split_fractions}")
    out_dir = Path(out_dir)
    clip_dir = out_dir / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    design = demo_design(n_classes)
    n_frames = max(2, int(round(duration * fps)))
    n_samples = int(round(duration * sample_rate))

    base, extra = divmod(n_clips, n_classes)
    n_per_class = [base + (1 if c < extra else 0) for c in range(n_classes)]
    splits = _split_assignment(n_per_class, split_fractions, np.random.default_rng((seed, 10**9)))
    jobs: list[
        tuple[int, int, str]
    ] = []  # (clip index, class, split) interleaved over classes so ids mix classes
    counters = [0] * n_classes
    i = 0
    while len(jobs) < n_clips:
        for c in range(n_classes):
            if counters[c] < n_per_class[c]:
                jobs.append((i, c, splits[c][counters[c]]))
                counters[c] += 1
                i += 1

    rows = []
    t0 = time.perf_counter()
    with ProgressTask(progress, "clips", total=n_clips, description="generating demo clips") as bar:
        for n_done, (idx, c, split) in enumerate(jobs, 1):
            cls = design.classes[c]
            rng = np.random.default_rng((seed, idx))
            degrade = rng.random() < degrade_prob
            which = rng.integers(2)  # 0: degrade video, 1: degrade audio
            frames = render_frames(
                cls.look, rng, n_frames=n_frames, size=size, degrade=degrade and which == 0
            )
            audio = render_audio(
                cls.sound,
                rng,
                n_samples=n_samples,
                sample_rate=sample_rate,
                degrade=degrade and which == 1,
            )
            clip_id = f"demo-{idx:05d}"
            rel = Path("clips") / f"{clip_id}.mp4"
            write_clip(out_dir / rel, frames=frames, fps=fps, audio=audio, sample_rate=sample_rate)
            rows.append((rel.as_posix(), cls.name, split, clip_id))
            bar.advance(1, info=f"{n_done / (time.perf_counter() - t0):5.1f} clips/s")

    manifest = out_dir / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "id"])
        w.writerows(rows)
    tmp.replace(manifest)
    info = {
        **design.to_json(),
        "params": {
            "n_clips": n_clips,
            "n_classes": n_classes,
            "seed": seed,
            "duration": duration,
            "size": size,
            "fps": fps,
            "sample_rate": sample_rate,
            "degrade_prob": degrade_prob,
            "split_fractions": list(split_fractions),
        },
    }
    (out_dir / DESIGN_FILE).write_text(json.dumps(info, indent=2))
    return manifest


def load_demo_design(out_dir: str | Path) -> DemoDesign:
    """The design written beside a generated data set's manifest."""
    path = Path(out_dir) / DESIGN_FILE
    try:
        return DemoDesign.from_json(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise InputError(f"{path} not found: not a demo data set directory") from exc
