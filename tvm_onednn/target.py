"""Targets for the machine we run on."""

from __future__ import annotations

import functools

import tvm_ffi


@functools.cache
def host_cpu() -> str:
    """LLVM's name for this CPU (e.g. ``sapphirerapids``, ``znver3``)."""
    return str(tvm_ffi.get_global_func("target.llvm_get_system_cpu")())


def host_target_spec() -> dict:
    """The JSON-dict target for this CPU: LLVM code for exactly its instruction set.

    A fixed ``mcpu`` such as ``sapphirerapids`` would emit AVX-512 / AMX code that
    faults with an illegal instruction on CPUs without them.
    """
    return {"kind": "llvm", "mcpu": host_cpu()}
