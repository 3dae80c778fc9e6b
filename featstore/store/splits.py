"""Split names: one normalisation for manifests, stores and the trainer.

A split decides what a model may learn from, so a near-miss spelling must never
turn test clips into training clips.  Known names are matched case-insensitively
and mapped to ``train`` / ``val`` / ``test`` (``validation`` -> ``val``); any other
name is refused unless the user names it explicitly (``diccae extract --split``).
Whatever is stored, :func:`is_eval_split` recognises names that *look* like an
evaluation split (``Test``, ``test2``, ``heldout_val``), and training's ``auto``
selection never takes those rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CANONICAL = ("train", "val", "test")
ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "development": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}
_EVAL_WORD = re.compile(
    r"(?<![a-z])(val|valid|validation|dev|development|test|testing|tst|holdout|heldout|eval)(?![a-z])"
)


class UnknownSplit(ValueError):
    """A split name that is neither known nor explicitly allowed."""


def normalize_split(value: str, allowed: Iterable[str] = ()) -> str:
    """The stored form of a manifest's split value ('' means no split)."""
    v = str(value).strip()
    if not v:
        return ""
    key = v.lower()
    if key in ALIASES:
        return ALIASES[key]
    for extra in allowed:
        if extra.strip().lower() == key:
            return extra.strip()
    raise UnknownSplit(
        f"unknown split {v!r}: expected one of {', '.join(CANONICAL)} (any case; validation/dev -> val), "
        f"or allow it by name with --split {v}"
    )


def is_eval_split(value: str) -> bool:
    """True for names that are, or look like, a validation or test split."""
    key = str(value).strip().lower()
    return ALIASES.get(key) in ("val", "test") or bool(_EVAL_WORD.search(key))


def canonical_split(value: str) -> str:
    """Known aliases mapped to their canonical name; anything else unchanged."""
    return ALIASES.get(str(value).strip().lower(), str(value).strip())
