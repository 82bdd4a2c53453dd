"""Subgraph JSON for int8 composites (``docs/subgraph-format.md``, "int8 nodes").

A node is written like its float32 counterpart (``op``, ``inputs``, ``attrs``, ``shape``,
``dtype``) plus ``quant``: the scales and zero points the oneDNN primitive applies. The
operands are the *quantized* tensors: the data input is the tensor the chain dequantizes,
the weight is the int8 constant (not its dequantized float32 value), the residual is the
int8 tensor when the chain dequantizes it (``residual_scale`` given) or the float32 tensor
added as is (no ``residual_scale``). ``dst_scale`` is given when the node writes int8; a
node whose ``dtype`` is float32 writes the real value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tvm import relax

from .. import relax_utils as ru
from .codegen import (
    CodegenError,
    _activation_attrs,
    _conv2d_attrs,
    _pool_attrs,
    _tensor_info,
)
from .qpatterns import DEQUANTIZE, QUANTIZE, qannotation_map, qchain_specs

_QCHAIN_SPECS = {spec.name: spec.chain for spec in qchain_specs()}

Ref = list
Resolve = Callable[[relax.Expr], Ref]


def _scalar(expr: relax.Expr, what: str) -> float:
    value = ru.scalar_value(expr)
    if value is None:
        raise CodegenError(f"{what} must be a constant scalar")
    return value


def _zero_point(expr: relax.Expr, what: str) -> int:
    if not ru.is_constant(expr):
        raise CodegenError(f"{what} zero point must be a constant")
    values = np.unique(ru.constant_array(expr))
    if values.size != 1:
        raise CodegenError(f"{what} zero point must be one value")
    return int(values[0])


def _src(ann: dict) -> dict[str, Any]:
    return {
        "src_scale": _scalar(ann["src_scale"], "input scale"),
        "src_zero_point": _zero_point(ann["src_zp"], "input"),
    }


def _dst(ann: dict) -> dict[str, Any]:
    if "dst" not in ann:
        return {}
    return {
        "dst_scale": _scalar(ann["dst_scale"], "output scale"),
        "dst_zero_point": _zero_point(ann["dst_zp"], "output"),
    }


def _extract(op: str, composite: relax.Function) -> dict[str, relax.Expr]:
    """Re-read the composite with its own pattern: annotation name -> matched expression."""
    var2val = relax.analysis.get_var2val(composite)
    out = composite.body.body
    root = var2val.get(out, out)
    for pattern, names in qannotation_map()[op]:
        matched = pattern.extract_matched_expr(root, var2val)
        if matched is not None:
            return {name: matched[p] for name, p in names.items() if p in matched}
    raise CodegenError(f"composite {op} does not match its own pattern")


def _chain_node(op: str, ann: dict, operand: Resolve) -> tuple[list, dict, dict]:
    spec = _QCHAIN_SPECS[op]
    root = ann["root"]
    inputs = [operand(ann["src_q"]), operand(ann["weight_q"])]
    quant = _src(ann)
    scales = ru.constant_array(ann["weight_scale"]).astype("float32").reshape(-1)
    quant["weight_scales"] = [float(s) for s in scales]
    if spec.bias:
        inputs.append(operand(ann["bias"]))
    if spec.add:
        if "residual_dq" in ann:
            inputs.append(operand(ann["residual_q"]))
            quant["residual_scale"] = _scalar(ann["residual_scale"], "residual scale")
            quant["residual_zero_point"] = _zero_point(ann["residual_zp"], "residual")
        else:
            inputs.append(operand(ann["residual_f32"]))
    quant.update(_dst(ann))
    attrs = _conv2d_attrs(root) if spec.base == "conv2d" else {}
    attrs.update(_activation_attrs(spec.activation, ann.get("activation")))
    return inputs, attrs, quant


def quantized_node(
    op: str, composite: relax.Function, call: relax.Call, resolve: Resolve
) -> dict[str, Any]:
    """The JSON node of one int8 composite call.

    Args:
        op: the composite name (``onednn.q...``, ``onednn.quantize``, ``onednn.dequantize``).
        composite: the composite function; ``call`` calls it inside the region.
        resolve: maps a region-level expression (argument or constant) to its reference.
    """
    ann = _extract(op, composite)
    param_refs = {p: resolve(a) for p, a in zip(composite.params, call.args)}

    def operand(expr: relax.Expr) -> Ref:
        return param_refs[expr] if expr in param_refs else resolve(expr)

    if op in _QCHAIN_SPECS:
        inputs, attrs, quant = _chain_node(op, ann, operand)
    elif op == QUANTIZE:
        inputs, attrs, quant = [operand(ann["lhs"])], {}, _dst(ann)
    elif op == DEQUANTIZE:
        inputs, attrs, quant = [operand(ann["src_q"])], {}, _src(ann)
    else:  # int8 pools
        inputs, attrs = [operand(ann["src_q"])], _pool_attrs(ann["root"])
        quant = {**_src(ann), **_dst(ann)}
    return {"op": op, "inputs": inputs, "attrs": attrs, "quant": quant, **_tensor_info(call)}
