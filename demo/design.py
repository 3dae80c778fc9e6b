"""The class design of the demo data set: which classes look alike, which sound alike.

Classes come in groups of four: two that **look alike** but sound different, two
that **sound alike** but look different (see :mod:`demo.data` for why).  A design is
plain data (:class:`DemoDesign`), saved beside the generated clips as JSON so the
report can name the pairs each modality should confuse.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

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
