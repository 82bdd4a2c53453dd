"""``relax.ext.onednn``: Relax regions -> subgraph JSON -> oneDNN runtime modules.

The JSON layout is the contract in ``docs/subgraph-format.md``. Each composite call
inside a region becomes one node; operands are resolved to region inputs, weights
(constants, named by TVM's ``constant_names`` map) or earlier nodes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import tvm_ffi
from tvm import relax

from .. import _ffi_api
from .. import relax_utils as ru
from . import qwriters, twriters  # noqa: F401  (register the int8 and transformer writers)
from .writers import CodegenError, CompositeCall, SymbolNames, tensor_info, writer_for

__all__ = ["FORMAT", "SYMBOLIC_VERSION", "VERSION", "CodegenError", "region_to_json"]

FORMAT = "tvm_onednn.subgraph"
VERSION = 1
#: The version of a region with symbolic dims (written as strings naming the symbol).
SYMBOLIC_VERSION = 2


class _RegionWriter:
    """Builds the JSON document of one region function."""

    def __init__(self, func: relax.Function, constant_names: Mapping):
        self.func = func
        self.constant_names = constant_names
        self.symbol = str(func.attrs["global_symbol"])
        self.refs: dict[relax.Var, list] = {}
        self.constants: list[dict[str, Any]] = []
        self.constant_index: dict[str, int] = {}
        self.nodes: list[dict[str, Any]] = []
        self.composites: dict[relax.Var, relax.Function] = {}
        self.symbols = SymbolNames()

    def write(self) -> dict[str, Any]:
        for i, param in enumerate(self.func.params):
            self.refs[param] = ["input", i]
        body = self.func.body
        for block in body.blocks:
            for binding in block.bindings:
                self._visit_binding(binding)
        outputs = body.body.fields if isinstance(body.body, relax.Tuple) else [body.body]
        inputs = [tensor_info(p, self.symbols) for p in self.func.params]
        self._check_symbols(inputs)
        return {
            "format": FORMAT,
            "version": SYMBOLIC_VERSION if self.symbols.names else VERSION,
            "symbol": self.symbol,
            "inputs": inputs,
            "constants": self.constants,
            "nodes": self.nodes,
            "outputs": [self._ref(o) for o in outputs],
        }

    def _check_symbols(self, inputs: list[dict[str, Any]]) -> None:
        """The runtime binds every symbol from the shapes of the region's inputs."""
        bound = {d for info in inputs for d in info["shape"] if isinstance(d, str)}
        unbound = sorted(set(self.symbols.names.values()) - bound)
        if unbound:
            raise CodegenError(
                f"{self.symbol}: symbolic dims {unbound} are not dims of any region input"
            )

    def _visit_binding(self, binding) -> None:
        value = binding.value
        if isinstance(value, relax.Function):
            self.composites[binding.var] = value
        elif isinstance(value, relax.Call) and value.op in self.composites:
            self.refs[binding.var] = ["node", len(self.nodes)]
            self.nodes.append(self._node(self.composites[value.op], value))
        elif isinstance(value, relax.Var):
            self.refs[binding.var] = self._ref(value)
        else:
            raise CodegenError(f"{self.symbol}: unexpected binding in a oneDNN region: {value}")

    def _ref(self, expr: relax.Expr) -> list:
        if ru.is_constant(expr):
            return self._constant_ref(expr)
        if expr in self.refs:
            return self.refs[expr]
        raise CodegenError(f"{self.symbol}: cannot resolve operand {expr}")

    def _constant_ref(self, const: relax.Expr) -> list:
        if const not in self.constant_names:
            raise CodegenError(f"{self.symbol}: constant has no name from RunCodegen")
        name = str(self.constant_names[const])
        if name not in self.constant_index:
            self.constant_index[name] = len(self.constants)
            self.constants.append({"name": name, **tensor_info(const)})
        return ["const", self.constant_index[name]]

    def _node(self, composite: relax.Function, call: relax.Call) -> dict[str, Any]:
        name = str(composite.attrs["Composite"])
        try:
            return writer_for(name)(CompositeCall(name, composite, call, self._ref, self.symbols))
        except CodegenError as err:
            raise CodegenError(f"{self.symbol}: {err}") from None


def region_to_json(func: relax.Function, constant_names: Mapping) -> str:
    """The subgraph JSON of one ``Codegen="onednn"`` region function."""
    return json.dumps(_RegionWriter(func, constant_names).write())


@tvm_ffi.register_global_func("relax.ext.onednn", override=True)
def _onednn_codegen(functions, options, constant_names) -> list:
    """RunCodegen's entry point: one runtime module per region."""
    del options  # no codegen options yet
    return [_ffi_api.create_module(region_to_json(f, constant_names)) for f in functions]
