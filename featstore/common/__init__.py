"""Shared plumbing every stage uses: device choice, atomic file writes, the writer lock,
read-ahead, worker pools and the Dask runtime.

Owns no data format and no stage; imports only :mod:`featstore.errors` and
:mod:`featstore.progress` from the rest of diccae, and nothing heavy at import time
(torch, CuPy, cuML and Dask are imported by the functions that use them).

* ``backend``: which device/array library to use, decided at run time;
* ``fileio``: outputs written atomically, typed errors for unwritable paths;
* ``lock``: one writer per store (``writer_lock``), with the holder's pid;
* ``prefetch``: read the next item in a thread while this one is used;
* ``workers``: process pools whose workers die with their parent;
* ``threads``: one worker thread per core, one BLAS/torch thread each, results in order;
* ``torch_threads``: torch's CPU kernels kept on the calling thread inside worker threads;
* ``dask_runtime``: ``local:N`` / ``tcp://`` schedulers as one context manager.
"""

from featstore.common.backend import (
    array_module_for,
    cuml_usable,
    cupy_usable,
    get_array_module,
    resolve_device,
    to_device,
    to_numpy,
    torch_cuda_usable,
)
from featstore.common.dask_runtime import dask_client, n_workers, parse_scheduler
from featstore.common.fileio import (
    atomic_write,
    atomic_write_path,
    check_output_file,
    ensure_output_dir,
    json_safe,
    refuse_inside_store,
    remove_stale_temp_files,
    write_temp,
)
from featstore.common.lock import lock_path, pid_alive, writer_lock
from featstore.common.prefetch import read_ahead
from featstore.common.threads import (
    blas_threads,
    default_workers,
    one_thread_per_worker,
    ordered_map,
    run_all,
)
from featstore.common.workers import worker_pool

__all__ = [
    "array_module_for",
    "atomic_write",
    "atomic_write_path",
    "blas_threads",
    "check_output_file",
    "cuml_usable",
    "cupy_usable",
    "dask_client",
    "default_workers",
    "ensure_output_dir",
    "get_array_module",
    "json_safe",
    "lock_path",
    "n_workers",
    "one_thread_per_worker",
    "ordered_map",
    "parse_scheduler",
    "pid_alive",
    "read_ahead",
    "refuse_inside_store",
    "remove_stale_temp_files",
    "resolve_device",
    "run_all",
    "to_device",
    "to_numpy",
    "torch_cuda_usable",
    "worker_pool",
    "write_temp",
    "writer_lock",
]
