"""The boundary to the C++ runtime (``libtvm_onednn.so``).

Importing this module loads the library once per process, which registers the globals
``onednn.*`` and the module loader ``ffi.Module.load_from_bytes.onednn_json`` (needed before
``tvm.runtime.load_module`` can read an exported model with oneDNN regions).

Library search order: ``$TVM_ONEDNN_LIBRARY`` (a file path), ``lib/`` beside this file (the
installed package), a development build in ``<repo>/build/``, then the copy installed in
site-packages (when the package is imported from a source checkout, as the tests do).
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
from pathlib import Path

import tvm_ffi

_LIB_NAME = "libtvm_onednn.so"
_PKG_DIR = Path(__file__).resolve().parent

# Keeps the loaded library module (and the functions registered by it) alive.
_LIB = None
_LIB_PATH: str | None = None
_DNNL_HANDLE = None


def _candidates() -> list[Path]:
    env = os.environ.get("TVM_ONEDNN_LIBRARY")
    paths = [Path(env)] if env else []
    paths.append(_PKG_DIR / "lib" / _LIB_NAME)
    paths.append(_PKG_DIR.parent / "build" / _LIB_NAME)
    # Imported from a source checkout (e.g. by the tests) while installed into site-packages.
    for site_dir in (*site.getsitepackages(), site.getusersitepackages()):
        paths.append(Path(site_dir) / "tvm_onednn" / "lib" / _LIB_NAME)
    return paths


def _preload_dnnl() -> None:
    """Load libdnnl.so.3 from the environment's prefix with RTLD_GLOBAL.

    The installed library finds it through its RPATH; this only matters for layouts where the
    RPATH does not point at it (development builds moved around, unusual prefixes).
    """
    global _DNNL_HANDLE
    if _DNNL_HANDLE is not None:
        return
    for prefix in (sys.prefix, sys.base_prefix):
        path = Path(prefix) / "lib" / "libdnnl.so.3"
        if path.exists():
            try:
                _DNNL_HANDLE = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return


def library_path() -> str | None:
    """Path of the loaded runtime library (None if it was registered by another copy)."""
    return _LIB_PATH


def _load() -> None:
    global _LIB, _LIB_PATH
    if _LIB is not None or tvm_ffi.get_global_func("onednn.version", allow_missing=True):
        return  # already loaded in this process (possibly by another import path)
    tried = []
    for path in _candidates():
        if not path.is_file():
            tried.append(f"{path} (missing)")
            continue
        try:
            _LIB = tvm_ffi.load_module(str(path))
        except Exception as first_err:  # noqa: BLE001 - retry once with oneDNN preloaded
            _preload_dnnl()
            try:
                _LIB = tvm_ffi.load_module(str(path))
            except Exception as err:  # noqa: BLE001
                tried.append(f"{path} ({err}; first attempt: {first_err})")
                continue
        _LIB_PATH = str(path)
        return
    raise ImportError(
        "tvm_onednn: cannot load the C++ runtime library " + _LIB_NAME + "; tried:\n  "
        + "\n  ".join(tried)
        + "\nInstall the package (pip install .) or build it (cmake -S . -B build && "
        "cmake --build build)."
    )


_load()


def _func(name: str):
    return tvm_ffi.get_global_func(name)


def create_module(graph_json: str):
    """Create an ``onednn_json`` runtime module from a subgraph JSON document.

    Raises ValueError naming the problem when the document violates docs/subgraph-format.md.
    """
    return _func("onednn.create_module")(graph_json)


def save_to_bytes(module) -> bytes:
    """``module->SaveToBytes()`` (header + JSON; constants are not included)."""
    return bytes(_func("onednn.module_save_to_bytes")(module))


def load_from_bytes(data: bytes):
    """Inverse of :func:`save_to_bytes` (the registered ``ffi.Module.load_from_bytes`` loader)."""
    return _func("ffi.Module.load_from_bytes.onednn_json")(data)


def set_num_threads(num_threads: int) -> None:
    """Threads used by oneDNN primitives in every later call (from any thread)."""
    _func("onednn.set_num_threads")(int(num_threads))


def get_num_threads() -> int:
    return int(_func("onednn.get_num_threads")())


def version() -> str:
    """oneDNN library version, e.g. ``"3.2.0"``."""
    return str(_func("onednn.version")())


def subgraph_format_version() -> int:
    """Highest docs/subgraph-format.md version the runtime accepts."""
    return int(_func("onednn.subgraph_format_version")())


def supported_composites() -> list[str]:
    """Exact composite names the runtime's op table dispatches on."""
    return [str(name) for name in _func("onednn.supported_composites")()]


def cpu_isa() -> str:
    """oneDNN's effective CPU ISA, e.g. ``"avx2"`` or ``"avx512_core_amx"``."""
    return str(_func("onednn.cpu_isa")())


def set_int8_saturation_guard(mode: int) -> None:
    """int8 weight halving on CPUs without VNNI (docs/runtime.md, "int8").

    ``-1``: auto (on iff the ISA has no VNNI, the default), ``0``: off, ``1``: on. Read when a
    region is initialized.
    """
    _func("onednn.set_int8_saturation_guard")(int(mode))


def get_int8_saturation_guard() -> dict:
    """``{"mode": -1|0|1, "active": bool, "vnni": bool}``."""
    info = _func("onednn.get_int8_saturation_guard")()
    return {"mode": int(info["mode"]), "active": bool(info["active"]), "vnni": bool(info["vnni"])}
