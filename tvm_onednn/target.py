"""Targets for the machine we run on."""

from __future__ import annotations

import functools
import json
import os

import tvm
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


def with_num_cores(spec: dict, num_cores: int | None = None) -> dict:
    """``spec`` with ``num-cores`` set (kept if present): MetaSchedule requires it.

    The default is the number of cores this process may run on, the count the
    runtime's threads use (see :mod:`tvm_onednn.threads`).
    """
    if "num-cores" in spec:
        return dict(spec)
    from .threads import default_num_threads

    return {**spec, "num-cores": int(num_cores or default_num_threads())}


def parse_target(text: str | dict | None) -> tvm.target.Target:
    """A Target from a JSON dict or its text (``'{"kind": "llvm", "mcpu": "znver3"}'``).

    ``None`` is this CPU. Raises ``ValueError`` with the reason for anything TVM rejects.
    """
    if text is None:
        return tvm.target.Target(host_target_spec())
    spec = text
    if isinstance(text, str):
        if os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"target must be a JSON object such as "
                f'\'{{"kind": "llvm", "mcpu": "{host_cpu()}"}}\' (or a file holding one); '
                f"cannot parse {text!r}: {err}"
            ) from None
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f'target must be a JSON object with a "kind", got {spec!r}')
    try:
        return tvm.target.Target(spec)
    except Exception as err:  # noqa: BLE001  (TVM raises ValueError, TypeError, its own)
        raise ValueError(f"invalid target {json.dumps(spec)}: {err}") from None
