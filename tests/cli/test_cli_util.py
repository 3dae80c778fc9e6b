"""cli/_util.py: the parsers shared by several commands turn bad text into exit-2 errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from cli._util import one_label_source, parse_names, parse_numbers, progress_wanted
from featstore.errors import InputError


def test_parse_names_strips_and_drops_empty_items():
    assert parse_names(" audio, video ,,audio+video", "--features") == (
        "audio",
        "video",
        "audio+video",
    )
    with pytest.raises(InputError, match="--features needs at least one view, got ' , '"):
        parse_names(" , ", "--features", "view")


def test_parse_numbers_int_and_float():
    assert parse_numbers("128, 64,", "--encoder-widths") == (128, 64)
    assert parse_numbers("0.1,1e-2", "--sweep-static-weight", float) == (0.1, 0.01)
    with pytest.raises(InputError, match="--encoder-widths expects comma-separated integers"):
        parse_numbers("128,1.5", "--encoder-widths")
    with pytest.raises(InputError, match="--sweep-static-weight expects comma-separated numbers"):
        parse_numbers("0.1,x", "--sweep-static-weight", float)


def test_one_label_source():
    one_label_source(Path("l.npy"), False)
    one_label_source(None, True)
    for labels, truth in ((None, False), (Path("l.npy"), True)):
        with pytest.raises(InputError, match="exactly one of --labels"):
            one_label_source(labels, truth)


def test_progress_wanted_only_on_a_terminal_without_json():
    term = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert progress_wanted(term) and not progress_wanted(term, json_output=True)
    assert not progress_wanted(pipe)
