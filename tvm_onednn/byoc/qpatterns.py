"""The int8 pattern table: QDQ chains that one oneDNN int8 primitive runs.

``tvm_onednn.quantize`` writes quantize/dequantize (QDQ) Relax graphs. Each chain

    dequantize(x_q) -> op(., dequantize(w_q)) -> [+ bias] -> [+ residual] -> [act] -> [quantize]

becomes one composite ``onednn.q<base>[_bias][_add][_<act>]`` (the runtime's dispatch key,
``docs/subgraph-format.md`` "int8 nodes"); the output dtype tells whether the chain ends
with a quantize (u8/s8 output) or writes float32. The residual is either
``dequantize(r_q)`` (added in int8 as a sum post-op) or a float32 tensor added as is.
Pools on int8 data are ``quantize(pool(dequantize(x_q)))``; lone ``quantize`` and
``dequantize`` are the boundary ops ``onednn.quantize`` / ``onednn.dequantize``.

Dynamic chains (``calib_mode="none"``): a matmul chain whose input is
``dequantize(quantize(x, s, zp), s, zp)`` with ``s`` / ``zp`` computed from ``x`` in the graph,
exactly as :mod:`tvm_onednn.quantize.realize` writes it, is fused together with that scale
computation into the same ``onednn.qmatmul*`` name, written with ``"src_scale": "dynamic"``
(the runtime quantizes ``x`` per call). They write float32 and add float32 residuals only.

Check functions reject what the runtime cannot run (non-zero weight zero points, activation
zero points outside their dtype, non-constant weights or scales, per-channel activation
scales, unsupported dtypes) and say why.

The table must be matched *before* ``FoldConstant`` runs: it folds
``dequantize(int8 constant)`` into a float32 weight, even inside composite functions
(see :func:`tvm_onednn.byoc.qpartition.fuse_quantized`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from tvm import relax
from tvm.relax.dpl.pattern import DFPattern, is_const, is_op, wildcard
from tvm.relax.transform import FusionPattern, PatternCheckContext

from .. import relax_utils as ru
from .chains import (
    BACKEND,
    BASE_OPS,
    POOLS,
    ChainSpec,
    Pattern,
    chain_specs,
    epilogue_pattern,
    pool_root,
)
from .checks import (
    leaks_intermediate,
    make_check,
    why_not_activation,
    why_not_bias,
    why_not_conv2d_layout,
    why_not_batch_only,
    why_not_pool,
    why_not_symbols,
)

logger = logging.getLogger(__name__)

QUANT_DTYPES = ("int8", "uint8")
DYNAMIC_SCHEMES = ("symmetric", "asymmetric")
QUANTIZE = f"{BACKEND}.quantize"
DEQUANTIZE = f"{BACKEND}.dequantize"


@dataclass(frozen=True)
class QChainSpec:
    """An int8 conv2d/matmul chain.

    ``requantize``: it ends with a quantize (int8 output). ``residual_first``: the residual
    is the first operand of its add. Both operand orders are separate table entries:
    ``FuseOpsByPattern`` does not try the other side of an ``|`` when a check rejects the
    first (e.g. ``add(a, b)`` where ``a`` is another chain's output that leaks).
    """

    chain: ChainSpec
    requantize: bool
    residual_first: bool = False
    dynamic: str = ""  # "symmetric" / "asymmetric": the input is quantized per call (matmul)

    @property
    def name(self) -> str:
        """Dispatch key: the fp32 name with ``q`` before the base op (both variants share it)."""
        return f"{BACKEND}.q{self.chain.name[len(BACKEND) + 1 :]}"

    @property
    def length(self) -> int:
        # dynamic chains first: their dequantize would also match a static chain's
        return self.chain.length + self.requantize + (100 if self.dynamic else 0)


@functools.cache
def qchain_specs() -> tuple[QChainSpec, ...]:
    """Every int8 chain, longest first (a chain with its quantize before the same without)."""
    specs = [
        QChainSpec(c, requantize, first)
        for c in chain_specs()
        for requantize in (True, False)
        for first in ((False, True) if c.add else (False,))
    ]
    specs += [
        QChainSpec(c, False, first, dynamic)
        for c in chain_specs()
        if c.base == "matmul"
        for first in ((False, True) if c.add else (False,))
        for dynamic in DYNAMIC_SCHEMES
    ]
    return tuple(sorted(specs, key=lambda s: -s.length))


@functools.cache
def qchain_by_name() -> Mapping[str, ChainSpec]:
    """int8 chain composite name -> the chain it fuses (its variants share the name)."""
    return MappingProxyType({spec.name: spec.chain for spec in qchain_specs()})


def qpool_name(kind: str) -> str:
    return f"{BACKEND}.q{kind}"


def qcomposite_names() -> list[str]:
    """All int8 composite names this table can produce (the runtime must know each)."""
    names = dict.fromkeys(s.name for s in qchain_specs())
    return [*names, *(qpool_name(p) for p in POOLS), QUANTIZE, DEQUANTIZE]


def is_quantized_composite(name: str) -> bool:
    """Whether ``name`` is a composite of this table."""
    return name in qannotation_map()


# ----------------------------------------------------------------------------------------
# Pattern builders. Scales, zero points and weights are wildcards so that checks can say
# why a non-constant one is rejected.


def _dequantize(prefix: str, data: DFPattern | None = None) -> tuple[DFPattern, dict]:
    data = data if data is not None else wildcard()
    scale, zero_point = wildcard(), wildcard()
    call = is_op("relax.dequantize")(data, scale, zero_point)
    return call, {
        f"{prefix}_q": data,
        f"{prefix}_dq": call,
        f"{prefix}_scale": scale,
        f"{prefix}_zp": zero_point,
    }


def _quantize(prefix: str, data: DFPattern) -> tuple[DFPattern, dict]:
    scale, zero_point = wildcard(), wildcard()
    call = is_op("relax.quantize")(data, scale, zero_point)
    return call, {f"{prefix}": call, f"{prefix}_scale": scale, f"{prefix}_zp": zero_point}


def _dynamic_dequantize(scheme: str) -> tuple[DFPattern, dict]:
    """``dequantize(quantize(x, s, zp), s, zp)`` with ``s`` / ``zp`` computed from ``x`` as
    ``tvm_onednn.quantize.realize`` writes them for ``calib_mode="none"``."""
    x = wildcard()
    ann: dict = {"src_f32": x}
    if scheme == "symmetric":
        amax = is_op("relax.max")(is_op("relax.abs")(x))
        qmax = is_const()
        scale = is_op("relax.maximum")(is_op("relax.divide")(amax, qmax), is_const())
        zero_point = is_const()
        ann.update(src_reduction_0=amax, src_qmax=qmax)
    else:
        x_min, x_max = is_op("relax.min")(x), is_op("relax.max")(x)
        lo = is_op("relax.minimum")(x_min, is_const())
        hi = is_op("relax.maximum")(x_max, is_const())
        width = is_op("relax.divide")(is_op("relax.subtract")(hi, lo), is_const())
        scale = is_op("relax.maximum")(width, is_const())
        ratio = is_op("relax.divide")(is_op("relax.negative")(lo), scale)
        clipped = is_op("relax.clip")(is_op("relax.round")(ratio), wildcard(), wildcard())
        zero_point = is_op("relax.astype")(clipped)
        ann.update(src_reduction_0=x_min, src_reduction_1=x_max)
    q = is_op("relax.quantize")(x, scale, zero_point)
    dq = is_op("relax.dequantize")(q, scale, zero_point)
    ann.update(src_q=q, src_dq=dq, src_scale=scale, src_zp=zero_point)
    return dq, ann


def make_qchain_pattern(spec: QChainSpec) -> Pattern:
    """The dataflow pattern of one int8 chain, with named sub-patterns."""
    src, annotations = _dynamic_dequantize(spec.dynamic) if spec.dynamic else _dequantize("src")
    weight, weight_ann = _dequantize("weight")
    annotations.update(weight_ann)
    root = is_op(BASE_OPS[spec.chain.base])(src, weight)
    annotations["root"] = root
    residual = None
    if spec.chain.add:
        residual_dq, residual_ann = _dequantize("residual")
        residual_f32 = wildcard()
        residual = residual_dq | residual_f32
        annotations.update(residual_ann, residual_f32=residual_f32)
    out = epilogue_pattern(spec.chain, root, annotations, residual, spec.residual_first)
    if spec.requantize:
        out, dst_ann = _quantize("dst", out)
        annotations.update(dst_ann)
    return out, annotations


def make_qpool_pattern(kind: str) -> Pattern:
    src, annotations = _dequantize("src")
    root = pool_root(kind, src)
    out, dst_ann = _quantize("dst", root)
    return out, {**annotations, "root": root, **dst_ann}


def make_quantize_pattern() -> Pattern:
    data = wildcard()
    out, annotations = _quantize("dst", data)
    return out, {"lhs": data, "root": out, **annotations}


def make_dequantize_pattern() -> Pattern:
    out, annotations = _dequantize("src")
    return out, {"lhs": annotations["src_q"], "root": out, **annotations}


# ----------------------------------------------------------------------------------------
# Checks. ``why_not_*`` return None when the runtime can run the match, else the reason.


def _const_values(expr: relax.Expr) -> np.ndarray | None:
    return ru.constant_array(expr) if ru.is_constant(expr) else None


_ZP_LIMITS = {"int8": (-128, 127), "uint8": (0, 255)}


def _why_not_zero_point(what: str, zero_point: relax.Expr, dtype: str | None = None) -> str | None:
    """Weights (``dtype`` None): 0. Activations: one integer in ``dtype``'s range."""
    values = _const_values(zero_point)
    if values is None:
        return f"{what} zero point must be a constant (the runtime bakes it in at init)"
    if dtype is None:
        if np.any(values != 0):
            return f"{what} zero point must be 0 (weights are symmetric)"
        return None
    if values.size != 1:
        return f"{what} zero point must be one value per tensor"
    lo, hi = _ZP_LIMITS[dtype]
    if not lo <= int(values.item()) <= hi:
        return f"{what} zero point {int(values.item())} is outside the range of {dtype}"
    return None


def _why_not_scalar_scale(what: str, scale: relax.Expr) -> str | None:
    values = _const_values(scale)
    if values is None:
        return (f"{what} scale must be a constant (calibrated; run-time scales run in oneDNN "
                "only in the dynamic matmul form realize writes)")
    if values.size != 1:
        return f"{what} scale must be one value per tensor (no per-channel activations)"
    if ru.dtype(scale) != "float32" or not np.isfinite(values).all() or values.item() <= 0:
        return f"{what} scale must be a positive finite float32"
    return None


def _why_not_quantized(what: str, data: relax.Expr, scale, zero_point) -> str | None:
    """Activation side of a dequantize/quantize: int8 data, constant scalar scale, zero 0."""
    if ru.dtype(data) not in QUANT_DTYPES:
        return f"{what} dtype {ru.dtype(data)} is not one of {QUANT_DTYPES}"
    reason = ru.why_not_plain_dims(ru.shape_dims(data))
    if reason:
        return reason
    return _why_not_scalar_scale(what, scale) or _why_not_zero_point(
        what, zero_point, ru.dtype(data)
    )


def _why_not_weight(base: str, ann: dict, out_channels: int) -> str | None:
    weight, scale, dq = ann["weight_q"], ann["weight_scale"], ann["weight_dq"]
    if not ru.is_constant(weight):
        return "weights are packed once at init, so they must be constants"
    if ru.dtype(weight) != "int8":
        return f"weights must be int8 (s8), got {ru.dtype(weight)}"
    values = _const_values(scale)
    if values is None:
        return "weight scales must be constants"
    if values.size not in (1, out_channels):
        return f"weight scales need 1 or {out_channels} (per output channel) values"
    if not np.isfinite(values).all() or np.any(values <= 0):
        return "weight scales must be positive and finite"
    channel_axis = 0 if base == "conv2d" else 1
    axis = int(dq.attrs.axis) % len(ru.static_shape(weight))
    if values.size > 1 and axis != channel_axis:
        return f"per-channel weight scales must run along axis {channel_axis} (output channels)"
    return _why_not_zero_point("weight", ann["weight_zp"])


def _why_not_qconv2d(call: relax.Call) -> str | None:
    return (
        why_not_conv2d_layout(call.attrs)
        or why_not_batch_only("int8 conv2d", call.args[0])
        or why_not_symbols(call, [call.args[0]])
    )


def _why_not_qmatmul(call: relax.Call) -> str | None:
    a_shape, b_shape = ru.shape_dims(call.args[0]), ru.shape_dims(call.args[1])
    if a_shape is None or b_shape is None or len(a_shape) < 2 or len(b_shape) != 2:
        return "int8 matmul takes a [..., M, K] input and a 2-D [K, N] weight"
    if ru.is_symbolic(a_shape[-1]):
        return "int8 matmul with a symbolic K (its constant weight has static dims)"
    return why_not_symbols(call, [call.args[0]])


def _why_not_residual(ann: dict, out_shape: list[int]) -> str | None:
    if "residual_dq" in ann:
        residual = ann["residual_q"]
        reason = _why_not_quantized("residual", residual, ann["residual_scale"], ann["residual_zp"])
        if reason:
            return reason
    else:
        residual = ann["residual_f32"]
        if ru.dtype(residual) != "float32":
            return f"a non-quantized residual must be float32, got {ru.dtype(residual)}"
    if not ru.same_dims(ru.shape_dims(residual), out_shape):
        return "the residual must have the output's exact shape"
    return None


def _why_not_dynamic_input(scheme: str, ann: dict) -> str | None:
    """The per-call quantization of a dynamic chain: as realize writes it, whole-tensor."""
    x, q = ann["src_f32"], ann["src_q"]
    if ru.dtype(x) != "float32":
        return f"a dynamically quantized input must be float32, got {ru.dtype(x)}"
    dtype = ru.dtype(q)
    if dtype not in QUANT_DTYPES or (scheme == "asymmetric" and dtype != "uint8"):
        return f"dynamic {scheme} quantization to {dtype} is not supported"
    if "residual_dq" in ann:
        return "a dynamic chain adds a float32 residual only"
    reductions = [v for k, v in ann.items() if k.startswith("src_reduction_")]
    if any(r.attrs.axis is not None for r in reductions):
        return "the dynamic range must be reduced over the whole tensor"
    if scheme == "symmetric":
        qmax = ru.scalar_value(ann["src_qmax"])
        if qmax != {"int8": 127.0, "uint8": 255.0}[dtype] or ru.scalar_value(ann["src_zp"]) != 0:
            return f"dynamic symmetric {dtype} needs max|x| / {127 if dtype == 'int8' else 255}"
    return ru.why_not_plain_dims(ru.shape_dims(x))


def _why_not_qchain(spec: QChainSpec, ctx: PatternCheckContext) -> str | None:
    if leaks_intermediate(ctx):
        return "an intermediate value is used outside the chain"
    ann = dict(ctx.annotated_expr)
    root = ann["root"]
    if ru.dtype(root) != "float32":
        return "the dequantized op must be float32"
    if spec.dynamic:
        reason = _why_not_dynamic_input(spec.dynamic, ann)
    else:
        reason = _why_not_quantized("input", ann["src_q"], ann["src_scale"], ann["src_zp"])
    if reason:
        return reason
    base = spec.chain.base
    reason = _why_not_qconv2d(root) if base == "conv2d" else _why_not_qmatmul(root)
    reason = reason or ru.why_not_plain_dims(ru.shape_dims(root))
    if reason:
        return reason
    out_shape = ru.shape_dims(root)
    out_channels = out_shape[1] if base == "conv2d" else out_shape[-1]
    reason = _why_not_weight(base, ann, out_channels)
    if reason:
        return reason
    if spec.chain.bias:
        reason = why_not_bias(base, ann["bias"], out_shape)
        if reason:
            return reason
    if spec.chain.add:
        reason = _why_not_residual(ann, out_shape)
        if reason:
            return reason
    if spec.chain.activation:
        reason = why_not_activation(spec.chain.activation, ann)
        if reason:
            return reason
    if spec.requantize:
        return _why_not_quantized("output", ann["dst"], ann["dst_scale"], ann["dst_zp"])
    return None


def _why_not_qpool(ctx: PatternCheckContext) -> str | None:
    if leaks_intermediate(ctx):
        return "an intermediate value is used outside the chain"
    ann = dict(ctx.annotated_expr)
    root = ann["root"]
    reason = why_not_pool(root)
    if reason:
        return reason
    reason = _why_not_quantized("input", ann["src_q"], ann["src_scale"], ann["src_zp"])
    reason = reason or _why_not_quantized("output", ann["dst"], ann["dst_scale"], ann["dst_zp"])
    if reason:
        return reason
    if ru.dtype(ann["dst"]) != ru.dtype(ann["src_q"]):
        return "an int8 pool keeps its input dtype"
    rescales = ru.scalar_value(ann["src_scale"]) != ru.scalar_value(ann["dst_scale"])
    if root.op.name == "relax.nn.max_pool2d" and rescales:
        return "int8 max pooling cannot rescale: input and output scales must be equal"
    src_zp = int(ru.scalar_value(ann["src_zp"]))
    if root.op.name == "relax.nn.max_pool2d" and src_zp != int(ru.scalar_value(ann["dst_zp"])):
        return "int8 max pooling cannot shift: input and output zero points must be equal"
    if root.op.name == "relax.nn.avg_pool2d" and src_zp != 0 and root.attrs.count_include_pad:
        padded = bool(root.attrs.ceil_mode) or any(int(p) > 0 for p in root.attrs.padding)
        if padded:
            return ("int8 avg pooling with count_include_pad and padding needs a zero point "
                    "of 0 (oneDNN pads with stored 0)")
    return None


def _why_not_quantize(ctx: PatternCheckContext) -> str | None:
    ann = dict(ctx.annotated_expr)
    data = ann["lhs"]
    if ru.dtype(data) != "float32":
        return "quantize takes float32 data"
    reason = ru.why_not_plain_dims(ru.shape_dims(data))
    if reason:
        return reason
    return _why_not_quantized("output", ann["dst"], ann["dst_scale"], ann["dst_zp"])


def _why_not_dequantize(ctx: PatternCheckContext) -> str | None:
    ann = dict(ctx.annotated_expr)
    if ru.is_constant(ann["src_q"]):
        return "a constant is dequantized by FoldConstant, not at run time"
    if ru.dtype(ann["root"]) != "float32":
        return "dequantize writes float32 only"
    return _why_not_quantized("input", ann["src_q"], ann["src_scale"], ann["src_zp"])


def qpattern_table() -> list[FusionPattern]:
    """The int8 table in priority order: chains (longest first), pools, then boundary ops."""
    table = []
    for spec in qchain_specs():
        pattern, annotations = make_qchain_pattern(spec)
        why_not = functools.partial(_why_not_qchain, spec)
        check = make_check(spec.name, why_not, logger)
        table.append(FusionPattern(spec.name, pattern, annotations, check))
    for kind in POOLS:
        pattern, annotations = make_qpool_pattern(kind)
        name = qpool_name(kind)
        check = make_check(name, _why_not_qpool, logger)
        table.append(FusionPattern(name, pattern, annotations, check))
    for name, (pattern, annotations), why_not in (
        (QUANTIZE, make_quantize_pattern(), _why_not_quantize),
        (DEQUANTIZE, make_dequantize_pattern(), _why_not_dequantize),
    ):
        table.append(FusionPattern(name, pattern, annotations, make_check(name, why_not, logger)))
    return table


@functools.cache
def qannotation_map() -> Mapping[str, list[Pattern]]:
    """Candidate (pattern, annotations) per int8 composite name, to re-read a composite.

    A chain name has several candidates (with and without the final quantize, and both
    operand orders of the residual add); they cannot match the same composite body.
    """
    table: dict[str, list] = {}
    for spec in qchain_specs():
        table.setdefault(spec.name, []).append(make_qchain_pattern(spec))
    for kind in POOLS:
        table[qpool_name(kind)] = [make_qpool_pattern(kind)]
    table[QUANTIZE] = [make_quantize_pattern()]
    table[DEQUANTIZE] = [make_dequantize_pattern()]
    return table

