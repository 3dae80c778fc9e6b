"""Which store rows a phase uses: train, M-hat update and eval rows (paper section 2.1.3).

Splits come from the store (canonical names, 'Validation' -> 'val'); rows need
both modalities extracted and, when labels are given, a label >= 0.  The update
set, whose fused features drive the M-hat update, is never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featstore.errors import InputError
from featstore.store.core import FeatureStore
from featstore.store.splits import canonical_split, is_eval_split

EVAL_SPLITS = ("val", "test")


def store_splits(store: FeatureStore) -> np.ndarray:
    """Split names as a fixed-width unicode array (zarr returns StringDType/object),
    known aliases in canonical form ('Validation' -> 'val', also in older stores)."""
    return np.array([canonical_split(str(s)) for s in store.splits.tolist()], dtype=str)


# --------------------------------------------------------------- row selection
def split_mask(store: FeatureStore, spec: str) -> np.ndarray:
    """Rows whose split matches ``spec``.

    ``all``: every row; ``auto``: every row not in a val/test split (pretraining on
    unlabelled data never sees evaluation clips); otherwise comma-separated names.
    """
    splits = store_splits(store)
    if spec == "all":
        return np.ones(store.n_rows, bool)
    if spec == "auto":  # also refuses names that only look like val/test ('Test', 'test2')
        return ~np.array([is_eval_split(s) for s in splits.tolist()], dtype=bool).reshape(
            splits.shape
        )
    names = [canonical_split(s) for s in spec.split(",") if s.strip()]
    if not names:
        raise InputError(f"empty split selection {spec!r}")
    mask = np.isin(splits, names)
    present = set(np.unique(splits).tolist())
    missing = [n for n in names if n not in present]
    if missing and not mask.any():
        raise InputError(
            f"{store.path}: no rows in split(s) {missing}; the store has splits {sorted(present)}"
        )
    return mask


def usable_mask(store: FeatureStore, labels: np.ndarray | None) -> np.ndarray:
    """Extraction done, both modalities present and (when given) a label >= 0."""
    mask = store.valid_rows(("audio", "video"))
    if labels is not None:
        mask &= labels >= 0
    return mask


def holdout(mask: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A deterministic random ``fraction`` of the rows in ``mask``."""
    rows = np.flatnonzero(mask)
    n = int(round(len(rows) * fraction))
    rng = np.random.default_rng([seed, 7919])
    chosen = rng.permutation(rows)[:n] if n else np.empty(0, np.int64)
    out = np.zeros_like(mask)
    out[chosen] = True
    return out


@dataclass
class RowSets:
    """Boolean masks over store rows for one phase."""

    train: np.ndarray
    update: np.ndarray  # rows whose fused features drive the M-hat update
    evaluate: np.ndarray  # rows scored each epoch
    update_spec: str
    leaks_test: bool = False

    def counts(self) -> dict[str, int]:
        return {
            "train": int(self.train.sum()),
            "update": int(self.update.sum()),
            "eval": int(self.evaluate.sum()),
        }


def parse_update_spec(spec: str) -> tuple[str, float]:
    if spec == "auto":
        return "auto", 0.5
    split, _, frac = spec.partition(":")
    try:
        fraction = float(frac) if frac else 1.0
    except ValueError as exc:
        raise InputError(f"--update-set {spec!r}: expected SPLIT:FRACTION, e.g. val:0.5") from exc
    if not 0 < fraction <= 1:
        raise InputError(f"--update-set {spec!r}: fraction must be in (0, 1]")
    if split not in ("val", "test", "train"):
        raise InputError(f"--update-set {spec!r}: split must be val, test or train")
    return split, fraction


def resolve_row_sets(
    store: FeatureStore,
    labels: np.ndarray | None,
    *,
    split: str,
    update_set: str,
    eval_split: str,
    seed: int,
) -> RowSets:
    """Train / update / eval rows; the update set is never trained on.

    ``auto`` update set: half of the validation split when the store has one,
    otherwise 10% of the training rows held out.  ``test:F`` is the paper's
    choice (section 2.1.3) and leaks test data into training decisions.
    """
    usable = usable_mask(store, labels)
    train = usable & split_mask(store, split)
    kind, fraction = parse_update_spec(update_set)
    splits = store_splits(store)
    if kind == "auto":
        val = usable & (splits == "val")
        kind, fraction = ("val", 0.5) if val.any() else ("train", 0.1)
    if kind == "train":
        update = holdout(train, fraction, seed)
        train = train & ~update
    else:
        pool = usable & (splits == kind)
        if not pool.any():
            raise InputError(
                f"{store.path}: --update-set {update_set!r} selects no usable labelled rows in split {kind!r}"
            )
        update = holdout(pool, fraction, seed)
        train = train & ~update
    # scoring rows are optional: a store without the eval split simply logs no accuracy
    eval_names = [
        s.strip() for s in (eval_split or "").split(",") if s.strip() and s.strip() != "none"
    ]
    ev = usable & np.isin(splits, eval_names) & ~update
    if not train.any():
        raise InputError(
            f"{store.path}: no usable rows to train on (split {split!r}: done, both modalities, label >= 0)"
        )
    return RowSets(train, update, ev, f"{kind}:{fraction:g}", leaks_test=(kind == "test"))
