"""Thread defaults: TVM's pool must not pin the process to one core (oneDNN would inherit it)."""

import os
import subprocess
import sys

import pytest


def test_tvm_pool_start_keeps_all_cores():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a process allowed on at least two CPUs")
    script = (
        "import os, tvm_onednn, tvm_ffi\n"
        "before = os.sched_getaffinity(0)\n"
        "tvm_ffi.get_global_func('runtime.NumThreads')()\n"
        "assert os.sched_getaffinity(0) == before, (before, os.sched_getaffinity(0))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)


def test_set_num_threads_validates_and_applies():
    import tvm_onednn

    with pytest.raises(ValueError, match="num_threads"):
        tvm_onednn.set_num_threads(0)
    previous = tvm_onednn.get_num_threads()
    tvm_onednn.set_num_threads(1)
    try:
        assert tvm_onednn.get_num_threads() == 1
    finally:
        tvm_onednn.set_num_threads(previous)
