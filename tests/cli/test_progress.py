"""The progress contract: library updates in, one rich bar per task key out."""

from __future__ import annotations

import io

from rich.console import Console

from cli.progress import rich_progress
from featstore.progress import ProgressTask, ProgressUpdate


def test_task_reports_open_advance_close():
    seen: list[ProgressUpdate] = []
    with ProgressTask(seen.append, "clips", total=10, description="extract") as bar:
        bar.advance(4, info="2 clips/s")
        bar.advance(6)
    assert seen[0] == ProgressUpdate("clips", 0.0, 10, 0.0, "extract", None)
    assert [u.advance for u in seen[1:3]] == [4, 6]
    assert seen[1].info == "2 clips/s"
    assert seen[-1].done and bar.completed == 10


def test_no_callback_is_silent():
    bar = ProgressTask(None, "rows", total=None)
    bar.advance(3)
    bar.close()
    assert bar.completed == 3


def test_renderer_draws_one_bar_per_task():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with rich_progress(console=console) as fn:
        assert fn is not None
        a = ProgressTask(fn, "restarts", total=3, description="restarts")
        b = ProgressTask(fn, "iters", total=5, description="iterations [x]")
        a.advance(3, info="last 1.5")
        b.update(completed=5)
        a.close()
        b.close()
        tasks = {t.description: t for t in fn._progress.tasks}
    assert tasks["restarts"].completed == 3 and tasks["restarts"].fields["info"] == "last 1.5"
    assert tasks["iterations \\[x]"].completed == 5  # user text is escaped, not markup
    assert "restarts" in out.getvalue()


def test_disabled_yields_none():
    with rich_progress(False) as fn:
        assert fn is None


def test_while_open_is_live_only_while_a_task_is_open():
    """Between two tasks no display is live, so a library bar drawn there does not clash."""
    from rich.progress import Progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with rich_progress(console=console, while_open=True) as fn:
        assert fn is not None
        with ProgressTask(fn, "clips", total=2, description="clips") as bar:
            bar.advance(2, info="4.0 clips/s")
            assert console._live_stack  # live while open
        assert not console._live_stack  # closed with its last task
        with Progress(console=console) as other:  # would raise LiveError if ours were live
            other.add_task("library bar", total=1)
        ProgressTask(fn, "rows", total=3).advance(1)  # left open: closed on exit
    assert not console._live_stack
    assert "clips" in out.getvalue() and "4.0 clips/s" in out.getvalue()
