"""Realize: rewrite the prepared float32 module into a quantize/dequantize (QDQ) module.

For every quantized chain (see :mod:`.annotate`)::

    x_q = R.quantize(x, s_x, 0, out_dtype=u8|s8)            # once per tensor, at int8 entry
    y = conv2d|matmul(R.dequantize(x_q, s_x, 0),
                      R.dequantize(w_q, s_w, 0, axis=O|N))   # s8 weights (:mod:`.weights`)
    y = y + bias; y = y + residual; y = act(y)               # unchanged, float32
    y_q = R.quantize(y, s_y, 0, out_dtype=u8|s8)             # only when all users are int8

A residual that has an int8 form (the int8 output of a quantized layer, or a tensor that
is quantized anyway as another layer's input) is read as ``R.dequantize`` of it (oneDNN
adds it in int8 as a sum post-op); any other residual is added in float32 as is. An int8
pool is ``quantize(pool(dequantize(x_q)), s_x)`` (the input's scale and dtype). Every
chain gets its own input dequantize so that the int8 pattern table can fuse it
(:mod:`tvm_onednn.byoc.qpatterns`).

With ``activation_scheme="asymmetric"`` a tensor whose calibrated range is signed is u8 with a
zero point (``range_to_scale(symmetric=False)``: all 256 levels span ``[min(lo, 0),
max(hi, 0)]``) instead of symmetric s8; non-negative ranges stay u8 with zero point 0 and
weights stay symmetric s8. oneDNN applies the zero points in its int8 primitives
(``docs/subgraph-format.md``, "int8 nodes"). Internal for now: the default stays symmetric.

Scales come from calibrated ranges, or, with ``calib_mode="none"`` (dynamic quantization,
like onnxruntime's ``quantize_dynamic``), are computed in the graph on every call: each
conv/matmul chain quantizes its own float32 input as
``dequantize(quantize(x, s, zp), s, zp)`` with ``s``/``zp`` computed from ``x`` itself,
symmetric ``s = max(max|x| / qmax, tiny)`` (s8, or u8 when ``x`` is provably non-negative) or,
with ``activation_scheme="asymmetric"``, u8 over ``[min(min x, 0), max(max x, 0)]`` with
``zp = clip(round(-lo / s), 0, 255)``. Dynamic chains write float32 (no int8 outputs, residuals
added in float32, pools stay float32). The int8 pattern table fuses the matmul chains with the
scale computation into ``onednn.qmatmul*`` nodes with ``"src_scale": "dynamic"``: oneDNN
computes the range, quantizes and runs the int8 matmul (docs/subgraph-format.md); conv chains
stay fake-quantized in TVM. The result also runs on TVM's own pipeline, where it is a
fake-quantized model with the same math.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from .. import relax_utils as ru
from ..calib import choose_activation_dtype, range_to_scale
from ..calib.collector import Range
from .annotate import CHAIN_KINDS, QuantPlan, Site
from .bias_correction import corrected_bias
from .inline import CompositeInliner, with_main
from .weights import GRANULARITIES, Granularity, quantize_weight, weight_encoding

__all__ = ["TensorQuant", "realize", "tensor_quant_params"]

logger = logging.getLogger(__name__)

QuantizedDtype = Literal["auto", "int8", "uint8"]
ActivationScheme = Literal["symmetric", "asymmetric"]
ACTIVATION_SCHEMES = ("symmetric", "asymmetric")
_QMAX = {"int8": 127.0, "uint8": 255.0}
_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class TensorQuant:
    """How one activation tensor is quantized: dtype, scale (None: computed at run time) and
    zero point."""

    dtype: str
    scale: float | None
    zero_point: int = 0
    dynamic_zero_point: bool = False  # run-time scale: u8 asymmetric (zero point per call)


def tensor_quant_params(
    plan: QuantPlan,
    ranges: Mapping[str, Range] | None,
    quantized_dtype: QuantizedDtype = "auto",
    activation_scheme: ActivationScheme = "symmetric",
) -> dict[str, TensorQuant]:
    """Dtype, scale and zero point of every range name of ``plan`` (``ranges=None``: run-time
    scales). ``"asymmetric"``: signed ranges become u8 with a zero point, unless int8 is forced."""
    if activation_scheme not in ACTIVATION_SCHEMES:
        raise ValueError(
            f"activation_scheme must be one of {ACTIVATION_SCHEMES}, got {activation_scheme!r}"
        )
    params = {}
    for name, observed in plan.observed.items():
        if ranges is None:
            auto = "uint8" if observed.nonnegative else "int8"
            dtype = auto if quantized_dtype == "auto" else quantized_dtype
            if activation_scheme == "asymmetric" and dtype == "int8" and quantized_dtype != "int8":
                params[name] = TensorQuant("uint8", None, dynamic_zero_point=True)
            else:
                params[name] = TensorQuant(dtype, None)
            continue
        lo, hi = ranges[name]
        if activation_scheme == "asymmetric" and lo < 0 and quantized_dtype != "int8":
            scale, zero_point = range_to_scale(lo, hi, "uint8", symmetric=False)
            params[name] = TensorQuant("uint8", scale, zero_point)
            continue
        dtype = choose_activation_dtype(lo, hi, quantized_dtype)
        if dtype == "uint8":
            lo = max(lo, 0.0)  # forced uint8: negative values saturate at 0
        scale, _ = range_to_scale(lo, hi, dtype, symmetric=True)
        params[name] = TensorQuant(dtype, scale)
    return params


def _zero(dtype: str) -> relax.Expr:
    return relax.const(0, dtype)


@dataclass(frozen=True)
class _QParams:
    """Scale (a constant, or a run-time value), zero point and dtype of an int8 tensor."""

    scale: relax.Expr
    zero_point: relax.Expr
    dtype: str

    def quantize(self, data: relax.Expr) -> relax.Expr:
        return relax.op.quantize(data, self.scale, self.zero_point, out_dtype=self.dtype)

    def dequantize(self, data: relax.Expr) -> relax.Expr:
        return relax.op.dequantize(data, self.scale, self.zero_point)


@mutator
class _Realizer(CompositeInliner):
    """Emits the QDQ form of every quantized layer while inlining the chains back."""

    def __init__(
        self,
        plan: QuantPlan,
        tensors: Mapping[str, TensorQuant],
        granularity: Granularity,
        input_means: Mapping[str, np.ndarray] | None = None,
    ):
        super().__init__(plan.module)
        self.plan = plan
        self.tensors = tensors
        self.granularity = granularity
        self.input_means = input_means or {}
        # input-module tensor -> (its int8 value in the new module, how it is quantized)
        self.int8: dict[relax.Var, tuple[relax.Var, _QParams]] = {}
        self.pending: _QParams | None = None  # the binding being emitted writes int8
        self.dynamic = any(t.scale is None for t in tensors.values())  # calib_mode="none"
        self.corrected: relax.Constant | None = None  # the bias of the chain being emitted

    # --- layers --------------------------------------------------------------------------

    def emit_composite(self, binding: relax.VarBinding, func: relax.Function) -> relax.Expr:
        site = self.plan.site(binding.var)
        if site is None or not site.layer.quantized:
            return super().emit_composite(binding, func)
        if self.dynamic and site.layer.kind not in CHAIN_KINDS:
            return super().emit_composite(binding, func)  # dynamic mode: pools stay float32
        params = {p: self.visit_expr(a) for p, a in zip(func.params, binding.value.args)}
        if self.dynamic:
            # Only the op reads the quantized input: a residual that is the same tensor
            # (one parameter) is added in float32, as the dynamic runtime node does.
            operands = {site.annotated["root"]: {0: self.dequantized(site.data)}}
            return self._chain(site, func, params, operands)
        params[site.annotated["lhs"]] = self.dequantized(site.data)
        if site.layer.kind in CHAIN_KINDS:
            return self._chain(site, func, params)
        # An int8 pool: pool the dequantized input, requantize with the input's parameters.
        self.pending = self.int8_form(site.data)[1]
        return self.pending.quantize(self.emit(self.inline(func, params)))

    def _chain(
        self, site: Site, func: relax.Function, params: dict, operands: dict | None = None
    ) -> relax.Expr:
        residual = site.annotated.get("residual")
        if residual is not None and site.residual in self.plan.range_of and not self.dynamic:
            params[residual] = self.dequantized(site.residual)
        replace = {site.annotated["rhs"]: self._weight(site)}
        if self.corrected is not None:
            replace[site.annotated["bias"]] = self.corrected
        out = self.inline(func, params, replace, operands)
        if site.var not in self.plan.int8_outputs or self.dynamic:
            return out  # the last quantized layer (every dynamic one) writes float32
        out = self.emit(out)
        self.pending = self._qparams(site.var, out)
        return self.pending.quantize(out)

    def after_binding(self, var: relax.Var, new_var: relax.Var) -> None:
        if self.pending is None:
            return
        self.int8[var] = (new_var, self.pending)
        self.pending = None
        if var in self.plan.float_read:
            # An int8 pool read by float32 ops: they see the dequantized value.
            self.set_var_remap(var, self.emit(self.int8[var][1].dequantize(new_var), var.name))

    def _weight(self, site: Site) -> relax.Expr:
        weight = ru.constant_array(site.annotated["rhs"])
        conv = site.layer.kind == "conv2d"
        axis, reduce_axis = (0, 1) if conv else (weight.ndim - 1, weight.ndim - 2)
        src_dtype = self.tensors[self.plan.range_of[site.data]].dtype
        encoding = weight_encoding(src_dtype, site.layer.kind)
        w_q, scales = quantize_weight(weight, axis, self.granularity, encoding, reduce_axis)
        shape = [-1 if d == axis else 1 for d in range(weight.ndim)] if scales.ndim else []
        dequantized = w_q.astype(np.float32) * scales.reshape(shape)
        self.corrected = corrected_bias(site, weight, dequantized, self.input_means)
        return self.emit(
            relax.op.dequantize(relax.const(w_q), relax.const(scales), _zero("int8"), axis=axis)
        )

    # --- int8 forms of tensors -----------------------------------------------------------

    def dequantized(self, var: relax.Var) -> relax.Var:
        """A fresh dequantize of ``var``'s int8 form (one per user, so each chain owns it).

        Dynamic mode: the whole per-call quantization (scale, quantize, dequantize) per user,
        so that each chain's pattern owns it (the runtime quantizes per node)."""
        if self.dynamic:
            f32 = self.visit_expr(var)
            qparams = self._qparams(var, f32)
            return self.emit(qparams.dequantize(self.emit(qparams.quantize(f32))))
        q_var, qparams = self.int8_form(var)
        return self.emit(qparams.dequantize(q_var))

    def int8_form(self, var: relax.Var) -> tuple[relax.Var, _QParams]:
        """``var``'s int8 value: a layer's int8 output, or a quantize emitted at first use."""
        if var not in self.int8:
            f32 = self.visit_expr(var)
            qparams = self._qparams(var, f32)
            self.int8[var] = (self.emit(qparams.quantize(f32)), qparams)
        return self.int8[var]

    def _qparams(self, var: relax.Var, f32: relax.Expr) -> _QParams:
        """How ``var`` (whose float32 value is ``f32``) is quantized."""
        tensor = self.tensors[self.plan.range_of[var]]
        if tensor.dynamic_zero_point:
            lo = self.emit(relax.op.minimum(relax.op.min(f32), relax.const(np.float32(0))))
            hi = self.emit(relax.op.maximum(relax.op.max(f32), relax.const(np.float32(0))))
            scale = self.emit(_asymmetric_scale(lo, hi))
            zero_point = self.emit(_asymmetric_zero_point(lo, scale))
            return _QParams(scale, zero_point, tensor.dtype)
        if tensor.scale is not None:
            scale = relax.const(np.float32(tensor.scale))
        else:
            scale = self.emit(_runtime_scale(f32, tensor.dtype))
        zero_point = relax.const(tensor.zero_point, tensor.dtype)
        return _QParams(scale, zero_point, tensor.dtype)


def _runtime_scale(f32: relax.Expr, dtype: str) -> relax.Expr:
    """``max(max(|x|) / qmax, tiny)``: the symmetric scale of this very tensor."""
    amax = relax.op.max(relax.op.abs(f32))
    scale = relax.op.divide(amax, relax.const(np.float32(_QMAX[dtype])))
    return relax.op.maximum(scale, relax.const(np.float32(_TINY)))


def _asymmetric_scale(lo: relax.Expr, hi: relax.Expr) -> relax.Expr:
    """``max((hi - lo) / 255, tiny)``: u8 levels over ``[lo, hi]`` (which contains 0)."""
    scale = relax.op.divide(relax.op.subtract(hi, lo), relax.const(np.float32(255.0)))
    return relax.op.maximum(scale, relax.const(np.float32(_TINY)))


def _asymmetric_zero_point(lo: relax.Expr, scale: relax.Expr) -> relax.Expr:
    """``uint8(clip(round(-lo / scale), 0, 255))``: the u8 value of real 0."""
    zp = relax.op.round(relax.op.divide(relax.op.negative(lo), scale))
    return relax.op.astype(relax.op.clip(zp, 0, 255), "uint8")


def realize(
    plan: QuantPlan,
    ranges: Mapping[str, Range] | None,
    quantized_dtype: QuantizedDtype = "auto",
    quantize_granularity: Granularity = "channel-wise",
    activation_scheme: ActivationScheme | None = None,
    input_means: Mapping[str, np.ndarray] | None = None,
) -> tvm.IRModule:
    """The QDQ module of ``plan`` with ``ranges`` (validated), or run-time scales (None).

    ``input_means``: ``{layer name: mean of its input per channel and tap}``
    (:class:`~.bias_correction.InputMeans`); those layers get their bias corrected for the
    rounding of their weights (:mod:`.bias_correction`).

    ``activation_scheme``: ``"symmetric"`` (zero points 0) or ``"asymmetric"`` (signed ranges
    as u8 with a zero point; see the module docstring). None: symmetric with calibrated
    ranges, asymmetric for run-time scales (measured more accurate on all-MiniLM-L6-v2:
    sentence-embedding cosine 0.989-0.993 vs 0.972-0.983 with s8 symmetric)."""
    if activation_scheme is None:
        activation_scheme = "asymmetric" if ranges is None else "symmetric"
    if quantize_granularity not in GRANULARITIES:
        raise ValueError(
            f"quantize_granularity must be one of {GRANULARITIES}, got {quantize_granularity!r}"
        )
    tensors = tensor_quant_params(plan, ranges, quantized_dtype, activation_scheme)
    realizer = _Realizer(plan, tensors, quantize_granularity, input_means)
    main = realizer.visit_expr(plan.module["main"])
    mod = relax.transform.DeadCodeElimination(["main"])(with_main(plan.module, main))
    logger.debug("realize: %d int8 tensors, %s", len(tensors), tensors)
    return mod
