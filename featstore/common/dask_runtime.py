"""Connecting to a Dask cluster: ``--dask tcp://host:8786`` or ``--dask local:N``.

Both distributed stages (:mod:`featstore.extract.dask`, :mod:`featstore.kmeans.dask`)
take one ``scheduler`` string, so a user can move from a laptop (``local:2``) to a
cluster (the scheduler's address) without changing anything else.  A local cluster
is started with one thread per worker process, because our tasks are CPU-heavy
Python/torch code that would only fight over the GIL and the cores otherwise, and it
is always shut down again, also when the run fails.  A remote cluster is only
connected to, never shut down: it belongs to the user.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from featstore.errors import BackendUnavailable, InputError

_LOCAL_RE = re.compile(r"^local(?::(\d+))?$")


def parse_scheduler(scheduler: str) -> tuple[str, Any]:
    """``"local:N"`` -> ``("local", N)``; an address -> ``("address", address)``.

    ``local`` alone means one worker per core.  A bare ``host:port`` gets ``tcp://``.
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise InputError("--dask needs a scheduler address (tcp://host:8786) or local:N")
    s = scheduler.strip()
    m = _LOCAL_RE.match(s)
    if m:
        if m.group(1) is None:
            import os

            return "local", os.cpu_count() or 1
        n = int(m.group(1))
        if n < 1:
            raise InputError(f"--dask {s}: a local cluster needs at least one worker")
        return "local", n
    if s.startswith("local"):
        raise InputError(f"--dask {s!r}: write local:N with N the number of worker processes")
    if "://" not in s:
        if ":" not in s:
            raise InputError(f"--dask {s!r}: expected tcp://HOST:PORT, HOST:PORT or local:N")
        s = "tcp://" + s
    return "address", s


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - dask[distributed] is a dependency
        raise BackendUnavailable(
            "--dask needs dask.distributed (pip install 'dask[distributed]')"
        ) from exc
    return distributed


@contextlib.contextmanager
def dask_client(scheduler: str, *, connect_timeout: float = 30.0) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler``; a local cluster lives only inside the block."""
    distributed = _require_distributed()
    kind, value = parse_scheduler(scheduler)
    if kind == "local":
        cluster = distributed.LocalCluster(
            n_workers=int(value), threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        try:
            with distributed.Client(cluster) as client:
                client.wait_for_workers(int(value), timeout=connect_timeout * 4)
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(value, timeout=f"{connect_timeout}s")
    except (OSError, TimeoutError) as exc:
        raise BackendUnavailable(
            f"cannot reach the Dask scheduler at {value} ({exc}); start one with `dask scheduler` "
            "and workers with `dask worker ADDRESS`, or use --dask local:N"
        ) from exc
    try:
        if not client.scheduler_info().get("workers"):
            try:
                client.wait_for_workers(1, timeout=connect_timeout)
            except TimeoutError as exc:
                raise BackendUnavailable(
                    f"the Dask scheduler at {value} has no workers (waited {connect_timeout:.0f} s); "
                    "start some with `dask worker ADDRESS`"
                ) from exc
        yield client
    finally:
        client.close()


def n_workers(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))
