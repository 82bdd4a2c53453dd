"""FoldBatchNormIntoConv: fold inference BatchNorm into the preceding conv2d.

TVM's ``FoldBatchnormToConv2D`` only folds ``batch_norm(conv2d(x, w))``; ONNX models
put the conv bias between them (``batch_norm(conv2d(x, w) + b)``). This pass folds
both forms: ``w' = w * s`` per output channel and ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``.

Left alone: a BatchNorm in training mode (it normalizes with the batch's own statistics),
a conv that is not NCHW/OIHW, a conv weight or BatchNorm parameter that is not a constant,
and a bias that is not one value per output channel (e.g. shape ``(C,)``, which broadcasts
along W, not C). The batch dimension may be symbolic or unknown.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl.pattern import is_const, is_op, is_tuple_get_item, wildcard

from .. import relax_utils as ru
from .rewrite_helpers import as_call, bound_calls, rewrite_relax_functions


def _per_channel(expr: relax.Expr, channels: int) -> np.ndarray | None:
    arr = ru.constant_array(expr).astype(np.float64)
    return arr.reshape(channels) if arr.size == channels else None


def _per_channel_bias(expr: relax.Expr, channels: int) -> np.ndarray | None:
    """A bias added to an NCHW conv output as one value per channel, or None.

    ``(C, 1, 1)`` and ``(1, C, 1, 1)`` are per channel, as is a lone value of rank <= 4;
    ``(C,)`` is not (it broadcasts along W).
    """
    arr = ru.constant_array(expr).astype(np.float64)
    if arr.ndim > 4:
        return None
    if arr.size == 1:
        return np.full(channels, arr.reshape(-1)[0])
    if arr.ndim >= 3 and arr.shape[-3:] == (channels, 1, 1):
        return arr.reshape(channels)
    return None


def _fold(func: relax.Function) -> relax.Function:
    data, weight, bias = wildcard(), is_const(), is_const()
    gamma, beta, mean, var = is_const(), is_const(), is_const(), is_const()
    conv = is_op("relax.nn.conv2d")(data, weight)
    biased = is_op("relax.add")(conv, bias)
    bn = is_op("relax.nn.batch_norm")(conv | biased, gamma, beta, mean, var)
    pattern = is_tuple_get_item(bn, 0)

    calls = bound_calls(func)

    def rewrite(expr: relax.Expr, m) -> relax.Expr:
        conv_call, bn_call = as_call(m[conv], calls), as_call(m[bn], calls)
        attrs, bn_attrs = conv_call.attrs, bn_call.attrs
        if (attrs.kernel_layout, attrs.data_layout, attrs.out_layout) != ("OIHW", "NCHW", "NCHW"):
            return expr
        if bn_attrs.axis != 1 or bn_attrs.training:
            return expr
        w = ru.constant_array(m[weight])
        out_channels = w.shape[0]
        params = [_per_channel(m[p], out_channels) for p in (gamma, beta, mean, var)]
        b = _per_channel_bias(m[bias], out_channels) if bias in m else np.zeros(out_channels)
        if any(p is None for p in params) or b is None:
            return expr
        g, bt, mu, v = params
        g = g if bn_attrs.scale else np.ones_like(g)
        bt = bt if bn_attrs.center else np.zeros_like(bt)
        scale = g / np.sqrt(v + float(bn_attrs.epsilon))
        new_w = (w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(w.dtype)
        new_b = (b - mu) * scale + bt
        new_conv = relax.op.nn.conv2d(
            conv_call.args[0],  # not m[data]: see rewrite_helpers.py
            relax.const(new_w, str(w.dtype)),
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=attrs.groups,
            data_layout=attrs.data_layout,
            kernel_layout=attrs.kernel_layout,
            out_layout=attrs.out_layout,
            out_dtype=attrs.out_dtype,
        )
        out_dtype = ru.dtype(expr) or str(w.dtype)
        return relax.op.add(new_conv, relax.const(new_b.reshape(1, -1, 1, 1), out_dtype))

    return relax.dpl.rewrite_call(pattern, rewrite, func)


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNormIntoConv")
class FoldBatchNormIntoConv:
    """Fold ``batch_norm(conv2d(x, w) [+ b])[0]`` with constant parameters into the conv."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(mod, _fold)
