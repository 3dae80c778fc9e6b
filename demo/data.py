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
circles of Eq. 2 treat them as the outliers the paper's coverage rule leaves out.  Generation is deterministic under ``seed``:
each clip draws from its own ``numpy.random.default_rng((seed, clip_index))``.
"""

from __future__ import annotations

import colorsys
import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from featstore.errors import InputError

MOTIONS = ("slide-h", "slide-v", "orbit", "diagonal")
#: names of 30-degree hue sectors, for readable class names
COLOUR_NAMES = (
    "red",
    "orange",
    "yellow",
    "lime",
    "green",
    "jade",
    "cyan",
    "azure",
    "blue",
    "violet",
    "magenta",
    "rose",
)
SPLITS = ("train", "val", "test")
DESIGN_FILE = "demo_classes.json"


@dataclass(frozen=True)
class Look:
    """What a class looks like: a coloured square moving over a tinted background."""

    name: str
    colour: tuple[int, int, int]
    background: tuple[int, int, int]
    motion: str
    size_frac: float  # side of the square relative to the frame side


@dataclass(frozen=True)
class Sound:
    """What a class sounds like: a harmonic tone over band-limited noise."""

    name: str
    tone_hz: float
    noise_band_hz: tuple[float, float]
    am_hz: float  # amplitude-modulation rate (0 = steady)


@dataclass(frozen=True)
class DemoClass:
    index: int
    name: str
    look: Look
    sound: Sound


@dataclass(frozen=True)
class DemoDesign:
    """The classes and which pairs each modality confuses by construction."""

    classes: list[DemoClass]
    look_alike: list[tuple[int, int]]  # same look, different sound: video confuses them
    sound_alike: list[tuple[int, int]]  # same sound, different look: audio confuses them

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def to_json(self) -> dict:
        return {
            "classes": [asdict(c) for c in self.classes],
            "look_alike": [list(p) for p in self.look_alike],
            "sound_alike": [list(p) for p in self.sound_alike],
        }

    @classmethod
    def from_json(cls, d: dict) -> DemoDesign:
        classes = []
        for c in d["classes"]:
            look = c["look"]
            sound = c["sound"]
            classes.append(
                DemoClass(
                    index=int(c["index"]),
                    name=str(c["name"]),
                    look=Look(
                        look["name"],
                        tuple(look["colour"]),
                        tuple(look["background"]),
                        look["motion"],
                        float(look["size_frac"]),
                    ),
                    sound=Sound(
                        sound["name"],
                        float(sound["tone_hz"]),
                        tuple(sound["noise_band_hz"]),
                        float(sound["am_hz"]),
                    ),
                )
            )
        return cls(
            classes, [tuple(p) for p in d["look_alike"]], [tuple(p) for p in d["sound_alike"]]
        )


def _make_looks(n: int) -> list[Look]:
    looks = []
    for k in range(n):
        hue = k / n
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        # background: the complementary hue, dark, so the object always stands out
        br, bg, bb = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.5, 0.25 + 0.1 * (k % 3))
        colour_name = COLOUR_NAMES[int(round(hue * len(COLOUR_NAMES))) % len(COLOUR_NAMES)]
        motion = MOTIONS[k % len(MOTIONS)]
        looks.append(
            Look(
                name=f"{colour_name}-{motion}",
                colour=(int(r * 255), int(g * 255), int(b * 255)),
                background=(int(br * 255), int(bg * 255), int(bb * 255)),
                motion=motion,
                size_frac=0.22 + 0.06 * (k % 3),
            )
        )
    return looks


def _make_sounds(n: int) -> list[Sound]:
    sounds = []
    tones = np.geomspace(260.0, 2200.0, num=max(n, 2))[:n]
    # interleave so that neighbouring sound ids differ in noise band as well as pitch
    for k in range(n):
        low_band = k % 2 == 0
        band = (150.0, 900.0) if low_band else (2500.0, 6000.0)
        sounds.append(
            Sound(
                name=f"tone{int(round(tones[k]))}{'-rumble' if low_band else '-hiss'}",
                tone_hz=float(tones[k]),
                noise_band_hz=band,
                am_hz=float((0.0, 3.0, 7.0)[k % 3]),
            )
        )
    return sounds


def demo_design(n_classes: int = 8) -> DemoDesign:
    """The class structure for ``n_classes`` classes (see the module docstring)."""
    if n_classes < 2:
        raise InputError(f"the demo needs at least 2 classes, got {n_classes}")
    look_of: list[int] = []
    sound_of: list[int] = []
    look_alike: list[tuple[int, int]] = []
    sound_alike: list[tuple[int, int]] = []
    n_look = n_sound = 0
    for c in range(n_classes):
        pos = c % 4
        has_partner = c + 1 < n_classes if pos in (0, 2) else True
        if pos == 0 or (pos == 2 and not has_partner):
            look_of.append(n_look)
            sound_of.append(n_sound)
            n_look += 1
            n_sound += 1
        elif pos == 1:  # looks like c-1, sounds different
            look_of.append(look_of[c - 1])
            sound_of.append(n_sound)
            n_sound += 1
            look_alike.append((c - 1, c))
        elif pos == 2:
            look_of.append(n_look)
            sound_of.append(n_sound)
            n_look += 1
            n_sound += 1
        else:  # pos == 3: sounds like c-1, looks different
            look_of.append(n_look)
            sound_of.append(sound_of[c - 1])
            n_look += 1
            sound_alike.append((c - 1, c))
    looks = _make_looks(n_look)
    sounds = _make_sounds(n_sound)
    classes = [
        DemoClass(
            c,
            f"{looks[look_of[c]].name}+{sounds[sound_of[c]].name}",
            looks[look_of[c]],
            sounds[sound_of[c]],
        )
        for c in range(n_classes)
    ]
    return DemoDesign(classes, look_alike, sound_alike)


# --------------------------------------------------------------------- rendering
def _trajectory(
    motion: str, t: np.ndarray, phase: float, speed: float
) -> tuple[np.ndarray, np.ndarray]:
    """Object centre in [0, 1]^2 for times ``t`` in [0, 1]."""
    w = 2 * np.pi * speed * t + phase
    if motion == "slide-h":
        return 0.5 + 0.32 * np.sin(w), np.full_like(t, 0.5)
    if motion == "slide-v":
        return np.full_like(t, 0.5), 0.5 + 0.32 * np.sin(w)
    if motion == "orbit":
        return 0.5 + 0.28 * np.cos(w), 0.5 + 0.28 * np.sin(w)
    if motion == "diagonal":
        s = 0.3 * np.sin(w)
        return 0.5 + s, 0.5 + s
    raise ValueError(f"unknown motion {motion!r}")


def render_frames(
    look: Look, rng: np.random.Generator, *, n_frames: int, size: int, degrade: bool = False
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one clip of ``look`` with per-clip jitter."""
    t = np.linspace(0.0, 1.0, n_frames, endpoint=False)
    cx, cy = _trajectory(look.motion, t, rng.uniform(0, 2 * np.pi), rng.uniform(0.7, 1.3))
    cx = cx + rng.uniform(-0.08, 0.08)
    cy = cy + rng.uniform(-0.08, 0.08)
    half = max(1.0, size * look.size_frac * rng.uniform(0.8, 1.2) / 2)
    colour = np.clip(np.array(look.colour) + rng.normal(0, 18, 3), 0, 255)
    background = np.clip(np.array(look.background) + rng.normal(0, 12, 3), 0, 255)
    frames = np.empty((n_frames, size, size, 3), np.float32)
    frames[:] = background
    ys, xs = np.mgrid[0:size, 0:size]
    for i in range(n_frames):
        inside = (np.abs(xs - cx[i] * size) <= half) & (np.abs(ys - cy[i] * size) <= half)
        frames[i][inside] = colour
    if degrade:  # badly lit under a strong colour cast: colours are no longer telling
        frames = frames * 0.2 + rng.uniform(0, 180, 3).astype(np.float32)
    noise_sigma = 30.0 if degrade else rng.uniform(3.0, 12.0)
    frames += rng.normal(0, noise_sigma, frames.shape).astype(np.float32)
    return np.clip(frames, 0, 255).astype(np.uint8)


def _band_noise(
    rng: np.random.Generator, n: int, sample_rate: int, band: tuple[float, float]
) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(0, 1, n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    spec[(freqs < band[0]) | (freqs > band[1])] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.abs(x).max() + 1e-9)


def render_audio(
    sound: Sound,
    rng: np.random.Generator,
    *,
    n_samples: int,
    sample_rate: int,
    degrade: bool = False,
) -> np.ndarray:
    """(S,) float32 mono waveform in [-1, 1] of one clip of ``sound`` with jitter."""
    t = np.arange(n_samples) / sample_rate
    f0 = sound.tone_hz * rng.uniform(0.96, 1.04)
    phase = rng.uniform(0, 2 * np.pi)
    tone = np.sin(2 * np.pi * f0 * t + phase) + 0.4 * np.sin(4 * np.pi * f0 * t + 2 * phase)
    if sound.am_hz > 0:
        tone *= 0.6 + 0.4 * np.sin(2 * np.pi * sound.am_hz * t + rng.uniform(0, 2 * np.pi))
    tone /= np.abs(tone).max() + 1e-9
    noise = _band_noise(rng, n_samples, sample_rate, sound.noise_band_hz)
    wave = tone * rng.uniform(0.5, 1.0) + noise * rng.uniform(0.2, 0.5)
    room = rng.normal(0, 1, n_samples)
    wave += room * (3.0 if degrade else rng.uniform(0.01, 0.08))
    if degrade:  # a loud unrelated sound in a random band drowns the class's own
        lo = rng.uniform(100.0, 4000.0)
        wave += 4.0 * _band_noise(rng, n_samples, sample_rate, (lo, lo * 1.5))
    onset = int(rng.uniform(0, 0.15) * n_samples)
    wave[:onset] *= np.linspace(0, 1, onset) if onset else 1
    wave = wave / (np.abs(wave).max() + 1e-9) * rng.uniform(0.3, 0.8)
    return wave.astype(np.float32)


# ---------------------------------------------------------------------- data set
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
    progress: bool = True,
) -> Path:
    """Write ``n_clips`` MP4 clips under ``out_dir/clips`` and return the manifest path.

    The manifest ``out_dir/manifest.csv`` has the columns ``path,label,split,id`` with
    paths relative to ``out_dir`` and labels as class names; ``out_dir/demo_classes.json``
    records the design (which pairs look or sound alike).  Splits are stratified per
    class.  Rerunning with the same arguments reproduces the same decoded content.
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
    jobs = []  # (clip index, class, split) interleaved over classes so ids mix classes
    counters = [0] * n_classes
    i = 0
    while len(jobs) < n_clips:
        for c in range(n_classes):
            if counters[c] < n_per_class[c]:
                jobs.append((i, c, splits[c][counters[c]]))
                counters[c] += 1
                i += 1

    rows = []
    with _progress(progress, n_clips) as advance:
        for idx, c, split in jobs:
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
            advance()

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


class _progress:
    """A rich progress bar (or nothing) that yields an ``advance()`` callback."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.total = total
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]generating demo clips"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._bar.__enter__()
        task = self._bar.add_task("clips", total=self.total, rate="")

        def advance() -> None:
            self._bar.advance(task)
            speed = self._bar.tasks[0].speed
            if speed:
                self._bar.update(task, rate=f"{speed:5.1f} clips/s")

        return advance

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
