"""Build a whole store under a hidden name, then swap it in: never a half-made store.

Extraction creating a fresh store and ``store import-h5`` both lay the new store out
in a hidden sibling (``.NAME.creating-PID`` / ``.NAME.importing-PID``) and rename it
to ``NAME`` only when it is complete.  A store already at ``NAME`` is renamed aside
first (``.NAME.replaced-PID``) and deleted only after the new one is in place, so a
kill at any moment leaves one whole store at ``NAME``; the leftovers of a killed run
are removed by the next writer (:func:`remove_stale_temps`).  :func:`swap_in` is the
one implementation of that sequence.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featstore.errors import StoreError
from featstore.store.schema import is_store_dir

TEMP_TAGS = ("creating", "importing", "replaced")


def temp_store_path(final: Path, tag: str) -> Path:
    """Hidden sibling where a new store is built before :func:`replace_store_dir`."""
    if tag not in TEMP_TAGS:
        raise ValueError(f"temporary store tag must be one of {TEMP_TAGS}, got {tag!r}")
    return final.with_name(f".{final.name}.{tag}-{os.getpid()}")


def remove_stale_temps(final: Path) -> None:
    """Delete hidden siblings left by a run that was killed while building ``final``.

    A sibling whose pid suffix names another live process belongs to a running
    writer and is never touched (the writer lock normally rules that out anyway).
    """
    from featstore.common.lock import pid_alive

    for tag in TEMP_TAGS:
        for stale in final.parent.glob(f".{final.name}.{tag}-*"):
            suffix = stale.name.rsplit("-", 1)[-1]
            if suffix.isdigit() and int(suffix) != os.getpid() and pid_alive(int(suffix)):
                continue
            shutil.rmtree(stale, ignore_errors=True)


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_replaceable(final: Path, *, overwrite: bool) -> None:
    """Refuse, before any work, a target the swap would refuse at the end.

    An empty folder is a fine target; an existing store needs ``overwrite``; anything
    else is never replaced.
    """
    if not final.exists() or is_empty_dir(final):
        return
    if not overwrite:
        raise StoreError(f"{final} already exists (use --overwrite to replace it)")
    if not is_store_dir(final):
        raise StoreError(f"{final} exists and is not a diccae store; refusing to replace it")


def replace_store_dir(new: Path, final: Path) -> None:
    """Move the finished store ``new`` to ``final``.

    A previous store at ``final`` is renamed aside first and deleted only after the
    new one is in place, so a kill at any moment leaves a whole store at ``final``
    (the other one under a hidden name that :func:`remove_stale_temps` clears).
    Anything at ``final`` that is not a store or an empty directory is never touched.
    """
    old = None
    if final.exists():
        if is_empty_dir(final):
            final.rmdir()
        elif is_store_dir(final):
            old = temp_store_path(final, "replaced")
            os.replace(final, old)
        else:
            raise StoreError(f"{final} exists and is not a diccae store; refusing to replace it")
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def swap_in(final: str | Path, tag: str) -> Iterator[Path]:
    """Yield a fresh hidden path to build a store at; on success swap it in at ``final``.

    If the block raises (or the swap itself fails), the hidden store is deleted and
    whatever was at ``final`` is left as it was::

        with swap_in(path, "creating") as tmp:
            FeatureStore.create(tmp, ...)
        store = FeatureStore.open(path, mode="r+")
    """
    final = Path(final)
    remove_stale_temps(final)
    tmp = temp_store_path(final, tag)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        yield tmp
        replace_store_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
