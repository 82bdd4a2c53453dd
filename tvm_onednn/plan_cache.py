"""The runtime's per-shape plan cache (regions compiled with symbolic dims).

A region with symbolic dims builds its oneDNN primitives, buffers and reorders for each
concrete input shape on first sight and keeps them in a least-recently-used cache of this
many plans per region (default 16, or ``TVM_ONEDNN_PLAN_CACHE_SIZE``). Packed weights are
shared by all plans of a region, so a smaller cache costs plan rebuilds, not weight memory.
"""

from __future__ import annotations

import tvm_ffi

from . import _ffi_api  # noqa: F401  (loads the runtime, which registers the globals)


def set_plan_cache_size(size: int) -> None:
    """Keep at most ``size`` (>= 1) plans per region; smaller caches evict at once."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"plan cache size must be an integer >= 1, got {size!r}")
    tvm_ffi.get_global_func("onednn.set_plan_cache_size")(size)


def get_plan_cache_size() -> int:
    """How many plans per region the cache keeps."""
    return int(tvm_ffi.get_global_func("onednn.get_plan_cache_size")())
