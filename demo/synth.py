"""Synthesis of one clip's frames and waveform from its class's look and sound.

Per-clip randomness (trajectory phase, position, speed, colour and size jitter,
pixel noise; tone detuning, loudness, phase, noise level, onset) keeps the task from
being trivial; ``degrade=True`` ruins one modality of a clip, which is where a fused
model earns its keep.  Everything draws from the ``rng`` it is given, so a clip is
reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

from demo.design import Look, Sound


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
