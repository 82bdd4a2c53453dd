"""JSON node writers: one composite call -> one node of the subgraph format.

A writer is registered for each composite name it writes (:func:`register_writer`); the
region codegen (:mod:`tvm_onednn.byoc.codegen`) looks the writer up by the composite's
name. This module holds the registry, the helpers every writer uses and the float32
writers; the int8 ones are in :mod:`tvm_onednn.byoc.qwriters`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax

from .. import relax_utils as ru
from .chains import FPMATH_ATTR, POOLS, chain_spec_by_name, pool_name
from .patterns import composite_annotations

Ref = list  # ["input", i] | ["const", i] | ["node", i]
Resolve = Callable[[relax.Expr], Ref]


class CodegenError(ValueError):
    """A region cannot be expressed in the subgraph format."""


class SymbolNames:
    """Names of a region's symbolic dims (version 2 of the format): a TIR variable's own
    name, made unique within the region when two distinct variables share a name."""

    def __init__(self):
        self.names: dict[tvm.tirx.Var, str] = {}

    def __call__(self, var: tvm.tirx.Var) -> str:
        if var not in self.names:
            taken = set(self.names.values())
            name, suffix = var.name, 1
            while name in taken:
                name, suffix = f"{var.name}_{suffix}", suffix + 1
            self.names[var] = name
        return self.names[var]


@dataclass(frozen=True)
class CompositeCall:
    """One call of a composite function inside a region."""

    name: str  # the composite name (dispatch key)
    func: relax.Function  # the composite function
    call: relax.Call  # the call inside the region
    resolve: Resolve  # region-level expression (argument, constant) -> reference
    symbols: SymbolNames | None = None  # names of the region's symbolic dims

    def operand_resolver(self) -> Resolve:
        """Resolves expressions inside the composite: its parameters map to the call's
        arguments, constants bound into it resolve as region constants."""
        param_refs = {p: self.resolve(a) for p, a in zip(self.func.params, self.call.args)}
        return lambda expr: param_refs[expr] if expr in param_refs else self.resolve(expr)


NodeWriter = Callable[[CompositeCall], dict[str, Any]]

_WRITERS: dict[str, NodeWriter] = {}


def register_writer(names: list[str]) -> Callable[[NodeWriter], NodeWriter]:
    """Decorator: ``writer`` writes the nodes of the composites named ``names``."""

    def decorate(writer: NodeWriter) -> NodeWriter:
        for name in names:
            if name in _WRITERS:
                raise ValueError(f"a node writer for {name!r} is already registered")
            _WRITERS[name] = writer
        return writer

    return decorate


def writer_for(name: str) -> NodeWriter:
    try:
        return _WRITERS[name]
    except KeyError:
        raise CodegenError(f"no node writer for composite {name!r}") from None


def writable_composites() -> list[str]:
    """Every composite name a writer is registered for."""
    return list(_WRITERS)


# ----------------------------------------------------------------------------------------
# Helpers shared by the writers.


def tensor_info(expr: relax.Expr, symbols: SymbolNames | None = None) -> dict[str, Any]:
    """``shape`` and ``dtype``; a symbolic dim is written as its name from ``symbols``
    (without ``symbols``, e.g. for constants, every dim must be static)."""
    dims = ru.shape_dims(expr)
    reason = ru.why_not_plain_dims(dims)
    if reason:
        raise CodegenError(f"{reason}: {expr.ty}")
    if symbols is None and ru.symbolic_dims(dims):
        raise CodegenError(f"this tensor needs static dims, got {expr.ty}")
    shape = [symbols(d) if ru.is_symbolic(d) else d for d in dims]
    return {"shape": shape, "dtype": ru.dtype(expr)}


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def conv2d_attrs(call: relax.Call) -> dict[str, Any]:
    a = call.attrs
    return {
        "strides": _ints(a.strides),
        "padding": _ints(a.padding),
        "dilation": _ints(a.dilation),
        "groups": int(a.groups),
    }


def pool_attrs(call: relax.Call) -> dict[str, Any]:
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


def activation_attrs(activation: str | None, expr: relax.Expr | None) -> dict[str, Any]:
    if activation == "clip":
        return {"clip_min": ru.prim_value(expr.args[1]), "clip_max": ru.prim_value(expr.args[2])}
    if activation == "leaky_relu":
        return {"alpha": float(expr.attrs.alpha)}
    return {}


def node(site: CompositeCall, inputs: list[Ref], attrs: Mapping, **extra: Any) -> dict:
    """A JSON node: op, inputs, attrs, any extra fields, then the output's shape/dtype."""
    output = tensor_info(site.call, site.symbols)
    return {"op": site.name, "inputs": inputs, "attrs": dict(attrs), **extra, **output}


# ----------------------------------------------------------------------------------------
# Float32 writers.


def _annotations(site: CompositeCall) -> dict[str, relax.Expr]:
    annotated = composite_annotations(site.func)
    if annotated is None:
        raise CodegenError(f"composite {site.name} does not match its own pattern")
    return annotated


@register_writer(list(chain_spec_by_name()))
def write_chain(site: CompositeCall) -> dict[str, Any]:
    spec = chain_spec_by_name()[site.name]
    ann = _annotations(site)
    operand = site.operand_resolver()
    inputs = [operand(ann["lhs"]), operand(ann["rhs"])]
    if spec.bias:
        inputs.append(operand(ann["bias"]))
    if spec.add:
        inputs.append(operand(ann["residual"]))
    attrs = conv2d_attrs(ann["root"]) if spec.base == "conv2d" else {}
    if "scale" in ann:  # matmul(a, b) * c, c a scalar constant (FoldMatmulScale)
        attrs["output_scale"] = ru.scalar_value(ann["scale"])
    attrs.update(activation_attrs(spec.activation, ann.get("activation")))
    fpmath = site.func.attrs.get(FPMATH_ATTR) if site.func.attrs is not None else None
    if fpmath is not None and spec.base == "matmul":
        attrs["fpmath"] = str(fpmath)  # set by partition.mark_float_matmul_math
    return node(site, inputs, attrs)


@register_writer([pool_name(kind) for kind in POOLS])
def write_pool(site: CompositeCall) -> dict[str, Any]:
    ann = _annotations(site)
    return node(site, [site.operand_resolver()(ann["lhs"])], pool_attrs(ann["root"]))
