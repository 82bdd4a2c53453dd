"""JSON node writers for int8 composites (``docs/subgraph-format.md``, "int8 nodes").

A node is written like its float32 counterpart (``op``, ``inputs``, ``attrs``, ``shape``,
``dtype``) plus ``quant``: the scales and zero points the oneDNN primitive applies. The
operands are the *quantized* tensors: the data input is the tensor the chain dequantizes,
the weight is the int8 constant (not its dequantized float32 value), the residual is the
int8 tensor when the chain dequantizes it (``residual_scale`` given) or the float32 tensor
added as is (no ``residual_scale``). ``dst_scale`` is given when the node writes int8; a
node whose ``dtype`` is float32 writes the real value. A dynamic chain (``calib_mode="none"``)
reads the float32 input itself and writes ``"src_scale": "dynamic"`` with ``src_dtype``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax

from .. import relax_utils as ru
from .chains import POOLS
from .qpatterns import DEQUANTIZE, QUANTIZE, qannotation_map, qchain_by_name, qpool_name
from .writers import (
    CodegenError,
    CompositeCall,
    activation_attrs,
    conv2d_attrs,
    node,
    pool_attrs,
    register_writer,
)


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
    if "src_f32" in ann:  # quantized per call by the runtime
        return {"src_scale": "dynamic", "src_dtype": ru.dtype(ann["src_q"])}
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


def _annotations(site: CompositeCall) -> dict[str, relax.Expr]:
    """Re-read the composite with its own patterns: annotation name -> matched expression."""
    for pattern, names in qannotation_map()[site.name]:
        matched = ru.extract_annotations(site.func, pattern, names)
        if matched is not None:
            return matched
    raise CodegenError(f"composite {site.name} does not match its own pattern")


@register_writer(list(qchain_by_name()))
def write_qchain(site: CompositeCall) -> dict[str, Any]:
    spec = qchain_by_name()[site.name]
    ann = _annotations(site)
    operand = site.operand_resolver()
    src = ann["src_f32"] if "src_f32" in ann else ann["src_q"]
    inputs = [operand(src), operand(ann["weight_q"])]
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
    attrs = conv2d_attrs(ann["root"]) if spec.base == "conv2d" else {}
    attrs.update(activation_attrs(spec.activation, ann.get("activation")))
    return node(site, inputs, attrs, quant=quant)


@register_writer([qpool_name(kind) for kind in POOLS])
def write_qpool(site: CompositeCall) -> dict[str, Any]:
    ann = _annotations(site)
    inputs = [site.operand_resolver()(ann["src_q"])]
    return node(site, inputs, pool_attrs(ann["root"]), quant={**_src(ann), **_dst(ann)})


@register_writer([QUANTIZE])
def write_quantize(site: CompositeCall) -> dict[str, Any]:
    ann = _annotations(site)
    return node(site, [site.operand_resolver()(ann["lhs"])], {}, quant=_dst(ann))


@register_writer([DEQUANTIZE])
def write_dequantize(site: CompositeCall) -> dict[str, Any]:
    ann = _annotations(site)
    return node(site, [site.operand_resolver()(ann["src_q"])], {}, quant=_src(ann))
