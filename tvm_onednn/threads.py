"""Thread settings shared by oneDNN (OpenMP) and TVM's own thread pool.

The VM runs one kernel at a time, so oneDNN and TVM never compute at the same time;
both default to every core the process may use. What matters is that the idle side
does not burn a core spinning while the other works, so OpenMP threads wait
passively unless the user chose otherwise (``OMP_WAIT_POLICY``), and TVM's pool is
sized like oneDNN's. ``TVM_ONEDNN_NUM_THREADS`` overrides the count for both.
"""

from __future__ import annotations

import os

import tvm_ffi


def default_num_threads() -> int:
    """``TVM_ONEDNN_NUM_THREADS`` if set, else the cores this process may run on."""
    env = os.environ.get("TVM_ONEDNN_NUM_THREADS")
    if env:
        value = int(env)
        if value < 1:
            raise ValueError(f"TVM_ONEDNN_NUM_THREADS must be >= 1, got {env!r}")
        return value
    return len(os.sched_getaffinity(0))


def set_thread_defaults() -> None:
    """Environment defaults read once: by libgomp when it loads, by TVM's pool when created.

    Without ``TVM_NUM_THREADS``, TVM assumes hyper-threading, sizes its pool at half the
    logical CPUs and pins the calling thread to core 0 when the pool starts; every thread
    created afterwards (oneDNN's OpenMP workers included) would inherit that one-core mask.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TVM_NUM_THREADS", str(default_num_threads()))


def set_num_threads(num_threads: int) -> None:
    """Use ``num_threads`` threads in oneDNN kernels and in TVM's generated code."""
    from . import _ffi_api

    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    _ffi_api.set_num_threads(num_threads)
    # TVM's pool: mode 1 = big cores first, nthreads as given.
    tvm_ffi.get_global_func("runtime.config_threadpool")(1, num_threads)


def get_num_threads() -> int:
    """The thread count oneDNN kernels use."""
    from . import _ffi_api

    return int(_ffi_api.get_num_threads())
