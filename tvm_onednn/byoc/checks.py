"""Why the runtime cannot run a match: the checks both pattern tables share.

Each ``why_not_*`` returns None when the runtime can run the expression, else one
sentence naming the runtime limit it protects (``offload_summary`` reports it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from tvm import relax
from tvm.relax.transform import PatternCheckContext

from .. import relax_utils as ru

FLOAT_DTYPES = ("float32",)

WhyNot = Callable[[PatternCheckContext], "str | None"]


def leaks_intermediate(ctx: PatternCheckContext) -> bool:
    """True when a value inside the match is also used outside it (fusing would lose it):
    by a binding outside the match, or after its block (a dataflow-block output)."""
    fused = set(ctx.matched_bindings.keys())
    root_var = ctx.value_to_bound_var.get(ctx.matched_expr)
    for var in fused:
        if var.same_as(root_var):
            continue
        if not isinstance(var, relax.DataflowVar):
            return True
        for user in ctx.var_usages.get(var, []):
            if user not in fused:
                return True
    return False


def why_not_operands(call: relax.Call) -> str | None:
    """Float32 operands and result whose shapes the runtime can take (dims static or plain
    symbolic variables)."""
    for expr in (*call.args[:2], call):
        if isinstance(expr.ty, relax.TensorType):
            if ru.dtype(expr) not in FLOAT_DTYPES:
                return f"dtype {ru.dtype(expr)} is not supported (runtime runs {FLOAT_DTYPES})"
            reason = ru.why_not_plain_dims(ru.shape_dims(expr))
            if reason:
                return reason
    return None


def why_not_batch_only(what: str, *exprs: relax.Expr) -> str | None:
    """NCHW ops (conv2d, pools): the runtime takes a symbolic batch N only."""
    for expr in exprs:
        if ru.symbolic_dims((ru.shape_dims(expr) or [])[1:]):
            return f"{what} with a symbolic channel/spatial dim (only the batch may be symbolic)"
    return None


def why_not_symbols(out: relax.Expr, inputs: list[relax.Expr]) -> str | None:
    """Every symbolic dim of ``out`` must be a dim of one of ``inputs`` (the runtime binds
    each symbol from the shapes of the tensors it is called with)."""
    known = [d for expr in inputs for d in ru.symbolic_dims(ru.shape_dims(expr))]
    for dim in ru.symbolic_dims(ru.shape_dims(out)):
        if not any(dim.same_as(k) for k in known):
            return f"output dimension {dim} is not a dimension of the chain's inputs"
    return None


def why_not_conv2d_layout(attrs) -> str | None:
    """Why the runtime cannot take a conv2d with these layouts / out_dtype, or None."""
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return "runtime takes NCHW data with OIHW weights"
    if attrs.out_layout not in ("", "NCHW"):
        return "runtime writes NCHW outputs"
    if attrs.out_dtype not in ("", None) and str(attrs.out_dtype) not in ("", "void", "float32"):
        return f"out_dtype {attrs.out_dtype} is not supported"
    return None


def why_not_conv2d(call: relax.Call) -> str | None:
    """Why the runtime cannot run this float32 conv2d call, or None."""
    reason = why_not_conv2d_layout(call.attrs)
    if reason:
        return reason
    if not ru.is_constant(call.args[1]):
        return "conv weights are packed once at init, so they must be constants"
    return (
        why_not_batch_only("conv2d", call.args[0])
        or why_not_operands(call)
        or why_not_symbols(call, [call.args[0]])
    )


def why_not_matmul(call: relax.Call) -> str | None:
    """Why the runtime cannot run this float32 matmul call, or None."""
    reason = why_not_operands(call)
    if reason:
        return reason
    return why_not_matmul_shapes(call)


def why_not_matmul_shapes(call: relax.Call) -> str | None:
    """Ranks and symbolic dims of a matmul: a's batch dims and M may be symbolic; K and N
    only when b is a run-time input (a constant b is packed once, with static dims)."""
    a, b = call.args[0], call.args[1]
    a_shape, b_shape = ru.shape_dims(a), ru.shape_dims(b)
    if a_shape is None or b_shape is None or len(a_shape) < 2 or len(b_shape) < 2:
        return "matmul operands must be at least 2-D"
    if len(b_shape) > 2 and not ru.same_dims(b_shape[:-2], a_shape[:-2]):
        return "batched b must have exactly a's batch dims (no broadcasting)"
    if ru.is_constant(b) and ru.is_symbolic(a_shape[-1]):
        return "matmul with a symbolic K needs a run-time b (a constant b has static dims)"
    return why_not_symbols(call, [a, b])


def why_not_pool(call: relax.Call) -> str | None:
    """Why the runtime cannot run this pooling (or global-mean) call, or None."""
    data = call.args[0]
    if ru.dtype(data) not in FLOAT_DTYPES:
        return f"dtype {ru.dtype(data)} is not supported (runtime runs {FLOAT_DTYPES})"
    shape = ru.shape_dims(data)
    if shape is None or len(shape) != 4:
        return "pooling takes 4-D NCHW data"
    reason = why_not_batch_only("pooling", data)
    reason = reason or ru.why_not_plain_dims(shape) or ru.why_not_plain_dims(ru.shape_dims(call))
    reason = reason or why_not_symbols(call, [data])
    if reason:
        return reason
    op = call.op.name
    if op == "relax.mean":
        axes = sorted(int(a) % 4 for a in call.attrs.axis) if call.attrs.axis else []
        if axes != [2, 3] or not call.attrs.keepdims:
            return "mean is offloaded only as a global pool over H, W with keepdims"
        return None
    if op == "relax.nn.adaptive_avg_pool2d":
        if call.attrs.layout != "NCHW" or ru.shape_dims(call)[2:] != [1, 1]:
            return "adaptive pool is offloaded only as an NCHW global pool"
        return None
    if call.attrs.layout != "NCHW" or call.attrs.out_layout not in ("", "NCHW"):
        return "runtime pools NCHW data"
    return None


#: The base op of every pattern -> its check (``offload_summary`` asks it why an op stayed).
WHY_NOT_OP: Mapping[str, Callable[[relax.Call], "str | None"]] = {
    "relax.nn.conv2d": why_not_conv2d,
    "relax.matmul": why_not_matmul,
    "relax.nn.max_pool2d": why_not_pool,
    "relax.nn.avg_pool2d": why_not_pool,
    "relax.nn.adaptive_avg_pool2d": why_not_pool,
    "relax.mean": why_not_pool,
}


def why_not_bias(base: str, bias: relax.Expr, out_shape: list) -> str | None:
    """A bias must be one value per output channel, broadcast along the channel axis."""
    channels = out_shape[1] if base == "conv2d" else out_shape[-1]
    if ru.is_symbolic(channels):
        return "a bias needs a static number of output channels"
    shape = ru.static_shape(bias)
    if shape is None or ru.num_elements(shape) != channels or len(shape) > len(out_shape):
        return "bias must hold one value per output channel"
    channel_axis = 1 if base == "conv2d" else len(out_shape) - 1
    aligned = [1] * (len(out_shape) - len(shape)) + list(shape)
    if any(d != 1 for i, d in enumerate(aligned) if i != channel_axis):
        return "bias must broadcast along the channel axis only"
    return None


def why_not_activation(activation: str, annotated: Mapping[str, relax.Expr]) -> str | None:
    """Multi-op activations must be exactly the function oneDNN's eltwise computes."""
    if activation == "hardswish":
        clip = annotated["hs_clip"]
        bounds = (ru.prim_value(clip.args[1]), ru.prim_value(clip.args[2]))
        shift = ru.scalar_value(annotated["hs_shift"].args[1])
        divisor = ru.scalar_value(annotated["hs_divide"].args[1])
        if (shift, divisor, bounds) != (3.0, 6.0, (0.0, 6.0)):
            return "hardswish must be exactly x * clip(x + 3, 0, 6) / 6"
    return None


def make_check(name: str, why_not: WhyNot, log: logging.Logger):
    """A ``FusionPattern`` check from a ``why_not`` function; rejections go to ``log``."""

    def check(ctx: PatternCheckContext) -> bool:
        reason = why_not(ctx)
        if reason:
            log.debug("%s rejected: %s", name, reason)
        return reason is None

    return check
