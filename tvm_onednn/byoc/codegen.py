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

from .. import relax_utils as ru
from .patterns import chain_specs, composite_annotations
from .qpatterns import is_quantized_composite

FORMAT = "tvm_onednn.subgraph"
VERSION = 1

_CHAIN_SPECS = {spec.name: spec for spec in chain_specs()}


class CodegenError(ValueError):
    """A region cannot be expressed in the subgraph format."""


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _tensor_info(expr: relax.Expr) -> dict[str, Any]:
    shape = ru.static_shape(expr)
    if shape is None:
        raise CodegenError(f"oneDNN regions need static tensor shapes, got {expr.ty}")
    return {"shape": shape, "dtype": ru.dtype(expr)}


def _conv2d_attrs(call: relax.Call) -> dict[str, Any]:
    a = call.attrs
    return {
        "strides": _ints(a.strides),
        "padding": _ints(a.padding),
        "dilation": _ints(a.dilation),
        "groups": int(a.groups),
    }


def _pool_attrs(call: relax.Call) -> dict[str, Any]:
    if call.op.name in ("relax.mean", "relax.nn.adaptive_avg_pool2d"):
        return {}
    a = call.attrs
    attrs = {
        "pool_size": _ints(a.pool_size),
        "strides": _ints(a.strides),
        "padding": _ints(a.padding),
        "dilation": _ints(a.dilation),
        "ceil_mode": bool(a.ceil_mode),
    }
    if call.op.name == "relax.nn.avg_pool2d":
        attrs["count_include_pad"] = bool(a.count_include_pad)
    return attrs


def _activation_attrs(activation: str | None, expr: relax.Expr | None) -> dict[str, Any]:
    if activation == "clip":
        return {"clip_min": ru.prim_value(expr.args[1]), "clip_max": ru.prim_value(expr.args[2])}
    if activation == "leaky_relu":
        return {"alpha": float(expr.attrs.alpha)}
    return {}


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

    def write(self) -> dict[str, Any]:
        for i, param in enumerate(self.func.params):
            self.refs[param] = ["input", i]
        body = self.func.body
        for block in body.blocks:
            for binding in block.bindings:
                self._visit_binding(binding)
        outputs = body.body.fields if isinstance(body.body, relax.Tuple) else [body.body]
        return {
            "format": FORMAT,
            "version": VERSION,
            "symbol": self.symbol,
            "inputs": [_tensor_info(p) for p in self.func.params],
            "constants": self.constants,
            "nodes": self.nodes,
            "outputs": [self._ref(o) for o in outputs],
        }

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
            self.constants.append({"name": name, **_tensor_info(const)})
        return ["const", self.constant_index[name]]

    def _node(self, composite: relax.Function, call: relax.Call) -> dict[str, Any]:
        op = str(composite.attrs["Composite"])
        if is_quantized_composite(op):
            from .qcodegen import quantized_node  # qcodegen imports this module

            return quantized_node(op, composite, call, self._ref)
        annotated = composite_annotations(composite)
        if annotated is None:
            raise CodegenError(f"{self.symbol}: composite {op} does not match its own pattern")
        param_refs = {p: self._ref(a) for p, a in zip(composite.params, call.args)}

        def operand(expr: relax.Expr) -> list:
            return param_refs[expr] if expr in param_refs else self._ref(expr)

        root = annotated["root"]
        spec = _CHAIN_SPECS.get(op)
        if spec is None:  # pooling
            inputs = [operand(annotated["lhs"])]
            attrs = _pool_attrs(root)
        else:
            inputs = [operand(annotated["lhs"]), operand(annotated["rhs"])]
            if spec.bias:
                inputs.append(operand(annotated["bias"]))
            if spec.add:
                inputs.append(operand(annotated["residual"]))
            attrs = _conv2d_attrs(root) if spec.base == "conv2d" else {}
            attrs.update(_activation_attrs(spec.activation, annotated.get("activation")))
        return {"op": op, "inputs": inputs, "attrs": attrs, **_tensor_info(call)}


def region_to_json(func: relax.Function, constant_names: Mapping) -> str:
    """The subgraph JSON of one ``Codegen="onednn"`` region function."""
    return json.dumps(_RegionWriter(func, constant_names).write())


@tvm_ffi.register_global_func("relax.ext.onednn", override=True)
def _onednn_codegen(functions, options, constant_names) -> list:
    """RunCodegen's entry point: one runtime module per region."""
    from .. import _ffi_api

    del options  # no codegen options yet
    return [_ffi_api.create_module(region_to_json(f, constant_names)) for f in functions]
