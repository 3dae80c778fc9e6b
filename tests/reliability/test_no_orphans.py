"""Decode workers (and the resource tracker) die when their parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PARENT = textwrap.dedent("""
    import multiprocessing as mp, os, sys, time
    from multiprocessing import resource_tracker
    from featstore.common.workers import worker_pool

    pool = worker_pool(2, mp.get_context("spawn"))
    pids = set()
    while len(pids) < 2:
        pids |= {f.result() for f in [pool.submit(os.getpid) for _ in range(8)]}
    # a task in flight, as when a clip is being decoded
    pool.submit(time.sleep, 60)
    resource_tracker.ensure_running()
    tracker = resource_tracker._resource_tracker._pid
    print(" ".join(map(str, sorted(pids))), tracker, flush=True)
    time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead but not yet reaped by its (re)parent
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only"
)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_and_tracker_die_with_a_killed_parent(sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        *workers, tracker = map(int, parent.stdout.readline().split())
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        parent.send_signal(sig)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in (*workers, tracker)):
            time.sleep(0.1)
        left = [p for p in (*workers, tracker) if _alive(p)]
        assert not left, f"processes outlived their parent: {left}"
    finally:
        parent.kill()
        parent.wait()


def test_fifo_clip_is_refused_at_once_not_blocking(tmp_path):
    from featstore.extract.decode import AudioSpec, decode_row

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    row, clip, reason = decode_row(3, str(fifo), None, "clip", None, AudioSpec())
    assert (row, clip) == (3, None) and "FIFO" in reason
    assert time.monotonic() - t0 < 5
