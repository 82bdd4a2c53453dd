"""Metadata carried inside an exported model: input names, shapes and dtypes.

A compiled VM only knows its parameters' names. ``compile`` adds a Relax function
``tvm_onednn_metadata`` returning the JSON of :func:`make_metadata` as a ``uint8`` tensor,
so that ``run`` and ``benchmark`` can check inputs (and make random ones) from the
``.so`` alone. A dim the library takes at any size is recorded by its name, e.g.
``{"name": "data", "shape": ["batch", 3, 224, 224], "dtype": "float32"}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

from .io import TensorSpec

FUNCTION = "tvm_onednn_metadata"


def make_metadata(specs: Sequence[TensorSpec], **extra) -> dict:
    return {"inputs": [s.as_dict() for s in specs], **extra}


def with_metadata(mod: tvm.IRModule, metadata: dict) -> tvm.IRModule:
    """``mod`` plus the function returning ``metadata`` (``mod`` is not modified)."""
    data = np.frombuffer(json.dumps(metadata).encode(), dtype="uint8")
    builder = relax.BlockBuilder()
    with builder.function(FUNCTION, params=[]):
        builder.emit_func_output(relax.const(data))
    func = builder.get()[FUNCTION]
    functions = {gv: f for gv, f in mod.functions.items() if gv.name_hint != FUNCTION}
    new = tvm.IRModule(functions, attrs=mod.attrs)
    new[FUNCTION] = func
    return new


def read_metadata(vm: relax.VirtualMachine) -> dict | None:
    """The metadata of a module built by ``compile`` (None for other modules)."""
    try:
        func = vm[FUNCTION]
    except (AttributeError, KeyError, RuntimeError, ValueError):
        return None
    return json.loads(bytes(func().numpy()).decode())


def input_specs(metadata: dict | None) -> list[TensorSpec] | None:
    if not metadata:
        return None
    return [TensorSpec.from_dict(d) for d in metadata.get("inputs", [])]
