"""The oneDNN pattern table.

Each entry is a chain that one oneDNN primitive runs with post-ops:
``base op -> [+ bias] -> [+ residual] -> [activation]``. The pattern name is the
runtime's exact dispatch key (``docs/subgraph-format.md``); check functions
reject exactly what the runtime cannot run, each with the reason logged.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tvm import relax
from tvm.relax.dpl.pattern import DFPattern, is_const, is_op, wildcard
from tvm.relax.transform import FusionPattern, PatternCheckContext

from .. import relax_utils as ru

logger = logging.getLogger(__name__)

BACKEND = "onednn"
SUPPORTED_DTYPES = ("float32",)


# ----------------------------------------------------------------------------------------
# Activations: name -> builder of the pattern applied to the chain's output so far.


def _scalar_const() -> DFPattern:
    return is_const()


def _hardswish(x: DFPattern) -> DFPattern:
    # ONNX HardSwish imports as x * clip(x + 3, 0, 6) / 6; the check reads the constants.
    shifted = is_op("relax.add")(x, _scalar_const())
    clipped = is_op("relax.clip")(shifted, wildcard(), wildcard())
    divided = is_op("relax.divide")(clipped, _scalar_const())
    out = is_op("relax.multiply")(x, divided)
    HARDSWISH_PARTS[out] = {"hs_shift": shifted, "hs_clip": clipped, "hs_divide": divided}
    return out


def _silu(x: DFPattern) -> DFPattern:
    sigmoid = is_op("relax.sigmoid")(x)
    return is_op("relax.nn.silu")(x) | is_op("relax.multiply")(x, sigmoid) | is_op(
        "relax.multiply"
    )(sigmoid, x)


# Sub-patterns of each hardswish pattern built, so chains can annotate (and check) them.
HARDSWISH_PARTS: dict[DFPattern, dict[str, DFPattern]] = {}

ACTIVATIONS: dict[str, Callable[[DFPattern], DFPattern]] = {
    "relu": lambda x: is_op("relax.nn.relu")(x),
    "clip": lambda x: is_op("relax.clip")(x, wildcard(), wildcard()),
    "sigmoid": lambda x: is_op("relax.sigmoid")(x),
    "tanh": lambda x: is_op("relax.tanh")(x),
    "gelu": lambda x: is_op("relax.nn.gelu")(x),
    "gelu_tanh": lambda x: is_op("relax.nn.gelu_tanh")(x),
    "silu": _silu,
    "hardswish": _hardswish,
    "leaky_relu": lambda x: is_op("relax.nn.leakyrelu")(x),
}

POOLS = ("max_pool2d", "avg_pool2d", "global_avg_pool2d")


@dataclass(frozen=True)
class ChainSpec:
    """What a conv2d/matmul composite fuses; its ``name`` is the dispatch key."""

    base: str
    bias: bool
    add: bool
    activation: str | None

    @property
    def name(self) -> str:
        parts = [f"{BACKEND}.{self.base}"]
        if self.bias:
            parts.append("bias")
        if self.add:
            parts.append("add")
        if self.activation:
            parts.append(self.activation)
        return "_".join(parts)

    @property
    def length(self) -> int:
        return 1 + self.bias + self.add + (self.activation is not None)


def chain_specs() -> list[ChainSpec]:
    """Every conv2d/matmul chain the runtime runs, longest chains first."""
    specs = [
        ChainSpec(base, bias, add, act)
        for base in ("conv2d", "matmul")
        for bias, add in itertools.product((True, False), repeat=2)
        for act in (*ACTIVATIONS, None)
    ]
    return sorted(specs, key=lambda s: -s.length)


def composite_names() -> list[str]:
    """All composite names this table can produce (the runtime must know each)."""
    return [s.name for s in chain_specs()] + [f"{BACKEND}.{p}" for p in POOLS]


# ----------------------------------------------------------------------------------------
# Pattern builders.


def _base_pattern(base: str) -> tuple[DFPattern, dict[str, DFPattern]]:
    lhs, rhs = wildcard(), wildcard()
    op = "relax.nn.conv2d" if base == "conv2d" else "relax.matmul"
    root = is_op(op)(lhs, rhs)
    return root, {"lhs": lhs, "rhs": rhs, "root": root}


def make_chain_pattern(
    spec: ChainSpec, residual_side: str = "either"
) -> tuple[DFPattern, dict[str, DFPattern]]:
    """The dataflow pattern of one chain, with named sub-patterns for checks and codegen.

    ``residual_side`` ("lhs", "rhs" or "either") fixes which operand of the residual add is
    the residual. The partition table lists both sides as separate entries: with an
    alternative inside one pattern, a match rejected by the check (e.g. ``out`` bound to the
    wrong operand) is not retried with the other operand order.
    """
    out, annotations = _base_pattern(spec.base)
    if spec.bias:
        bias = is_const()
        out = is_op("relax.add")(out, bias) | is_op("relax.add")(bias, out)
        annotations["bias"] = bias
        annotations["bias_add"] = out
    if spec.add:
        residual = wildcard()
        residual_rhs = is_op("relax.add")(out, residual)
        residual_lhs = is_op("relax.add")(residual, out)
        out = {"rhs": residual_rhs, "lhs": residual_lhs}.get(
            residual_side, residual_rhs | residual_lhs
        )
        annotations["residual"] = residual
        annotations["residual_add"] = out
    if spec.activation:
        out = ACTIVATIONS[spec.activation](out)
        annotations["activation"] = out
        annotations.update(HARDSWISH_PARTS.pop(out, {}))
    return out, annotations


def make_pool_pattern(kind: str) -> tuple[DFPattern, dict[str, DFPattern]]:
    data = wildcard()
    if kind == "global_avg_pool2d":
        root = is_op("relax.mean")(data) | is_op("relax.nn.adaptive_avg_pool2d")(data)
    else:
        root = is_op(f"relax.nn.{kind}")(data)
    return root, {"lhs": data, "root": root}


# ----------------------------------------------------------------------------------------
# Checks: each reason names the runtime limit it protects. ``why_not_*`` return None
# when the runtime can run the match, else the reason (offload_summary reports it).


def _leaks_intermediate(ctx: PatternCheckContext) -> bool:
    """True when a value inside the chain is also used outside it (fusing would lose it)."""
    fused = set(ctx.matched_bindings.keys())
    root_var = ctx.value_to_bound_var.get(ctx.matched_expr)
    for var in fused:
        if var.same_as(root_var):
            continue
        for user in ctx.var_usages.get(var, []):
            if user not in fused:
                return True
    return False


def _why_not_operands(call: relax.Call) -> str | None:
    for expr in (*call.args[:2], call):
        if isinstance(expr.ty, relax.TensorType):
            if ru.dtype(expr) not in SUPPORTED_DTYPES:
                return f"dtype {ru.dtype(expr)} is not supported (runtime runs {SUPPORTED_DTYPES})"
            if ru.static_shape(expr) is None:
                return "shapes must be static"
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
    """Why the runtime cannot run this conv2d call, or None."""
    reason = why_not_conv2d_layout(call.attrs)
    if reason:
        return reason
    if not ru.is_constant(call.args[1]):
        return "conv weights are packed once at init, so they must be constants"
    return _why_not_operands(call)


def why_not_matmul(call: relax.Call) -> str | None:
    """Why the runtime cannot run this matmul call, or None."""
    reason = _why_not_operands(call)
    if reason:
        return reason
    a_shape, b_shape = ru.static_shape(call.args[0]), ru.static_shape(call.args[1])
    if len(a_shape) < 2 or len(b_shape) < 2:
        return "matmul operands must be at least 2-D"
    if len(b_shape) > 2 and tuple(b_shape[:-2]) != tuple(a_shape[:-2]):
        return "batched b must have exactly a's batch dims (no broadcasting)"
    return None


def why_not_pool(call: relax.Call) -> str | None:
    """Why the runtime cannot run this pooling (or global-mean) call, or None."""
    data = call.args[0]
    if ru.dtype(data) not in SUPPORTED_DTYPES:
        return f"dtype {ru.dtype(data)} is not supported (runtime runs {SUPPORTED_DTYPES})"
    shape = ru.static_shape(data)
    if shape is None or len(shape) != 4:
        return "pooling takes static 4-D NCHW data"
    op = call.op.name
    if op == "relax.mean":
        axes = sorted(int(a) % 4 for a in call.attrs.axis) if call.attrs.axis else []
        if axes != [2, 3] or not call.attrs.keepdims:
            return "mean is offloaded only as a global pool over H, W with keepdims"
        return None
    if op == "relax.nn.adaptive_avg_pool2d":
        if call.attrs.layout != "NCHW" or ru.static_shape(call)[2:] != [1, 1]:
            return "adaptive pool is offloaded only as an NCHW global pool"
        return None
    if call.attrs.layout != "NCHW" or call.attrs.out_layout not in ("", "NCHW"):
        return "runtime pools NCHW data"
    return None


WHY_NOT = {
    "relax.nn.conv2d": why_not_conv2d,
    "relax.matmul": why_not_matmul,
    "relax.nn.max_pool2d": why_not_pool,
    "relax.nn.avg_pool2d": why_not_pool,
    "relax.nn.adaptive_avg_pool2d": why_not_pool,
    "relax.mean": why_not_pool,
}


def _why_not_bias(base: str, bias: relax.Expr, out_shape: list[int]) -> str | None:
    channels = out_shape[1] if base == "conv2d" else out_shape[-1]
    shape = ru.static_shape(bias)
    if shape is None or ru.num_elements(shape) != channels or len(shape) > len(out_shape):
        return "bias must hold one value per output channel"
    channel_axis = 1 if base == "conv2d" else len(out_shape) - 1
    # A per-channel bias broadcasts along exactly one axis: the channel axis.
    aligned = [1] * (len(out_shape) - len(shape)) + list(shape)
    if any(d != 1 for i, d in enumerate(aligned) if i != channel_axis):
        return "bias must broadcast along the channel axis only"
    return None


def _why_not_activation(activation: str, annotated: Mapping[str, relax.Expr]) -> str | None:
    if activation == "hardswish":
        clip = annotated["hs_clip"]
        bounds = (ru.prim_value(clip.args[1]), ru.prim_value(clip.args[2]))
        shift = ru.scalar_value(annotated["hs_shift"].args[1])
        divisor = ru.scalar_value(annotated["hs_divide"].args[1])
        if (shift, divisor, bounds) != (3.0, 6.0, (0.0, 6.0)):
            return "hardswish must be exactly x * clip(x + 3, 0, 6) / 6"
    return None


def _why_not_chain(spec: ChainSpec, ctx: PatternCheckContext) -> str | None:
    if _leaks_intermediate(ctx):
        return "an intermediate value is used outside the chain"
    root = ctx.annotated_expr["root"]
    reason = WHY_NOT[root.op.name](root)
    if reason:
        return reason
    out_shape = ru.static_shape(root)
    if spec.bias:
        reason = _why_not_bias(spec.base, ctx.annotated_expr["bias"], out_shape)
        if reason:
            return reason
    if spec.add:
        residual = ctx.annotated_expr["residual"]
        if ru.static_shape(residual) != out_shape or ru.dtype(residual) != ru.dtype(root):
            return "the residual must have the output's exact shape and dtype"
    if spec.activation:
        return _why_not_activation(spec.activation, ctx.annotated_expr)
    return None


def make_check(
    name: str,
    why_not: Callable[[PatternCheckContext], str | None],
    log: logging.Logger = logger,
):
    """A FusionPattern check from a ``why_not`` function; rejections go to ``log`` (debug)."""

    def check(ctx: PatternCheckContext) -> bool:
        reason = why_not(ctx)
        if reason:
            log.debug("%s rejected: %s", name, reason)
        return reason is None

    return check


def pattern_table() -> list[FusionPattern]:
    """The full table in priority order (longest chains first, then pools)."""
    table = []
    for spec in chain_specs():
        why_not = functools.partial(_why_not_chain, spec)
        for side in ("rhs", "lhs") if spec.add else ("either",):
            pattern, annotations = make_chain_pattern(spec, side)
            table.append(
                FusionPattern(spec.name, pattern, annotations, make_check(spec.name, why_not))
            )
    for kind in POOLS:
        pattern, annotations = make_pool_pattern(kind)
        name = f"{BACKEND}.{kind}"
        why_not = lambda ctx: why_not_pool(ctx.annotated_expr["root"])
        table.append(FusionPattern(name, pattern, annotations, make_check(name, why_not)))
    return table


def register() -> None:
    """Register the table with TVM's pattern registry under the ``onednn`` prefix."""
    from tvm.relax.backend.pattern_registry import register_patterns

    # get_patterns_with_prefix returns the registry reversed: register lowest priority first.
    register_patterns(list(reversed(pattern_table())))


@functools.cache
def annotation_map() -> Mapping[str, tuple[DFPattern, dict[str, DFPattern]]]:
    """Pattern and annotations by composite name (used by codegen to re-read a composite)."""
    table = {s.name: make_chain_pattern(s) for s in chain_specs()}
    table.update({f"{BACKEND}.{p}": make_pool_pattern(p) for p in POOLS})
    return table


def composite_annotations(func: relax.Function) -> dict[str, relax.Expr] | None:
    """The annotated expressions (root, lhs, rhs, ...) of a float32 composite function, or
    None when its body does not match the pattern its ``Composite`` name stands for."""
    pattern, annotations = annotation_map()[str(func.attrs["Composite"])]
    var2val = relax.analysis.get_var2val(func)
    out = func.body.body
    matched = pattern.extract_matched_expr(var2val.get(out, out), var2val)
    if matched is None:
        return None
    return {name: matched[p] for name, p in annotations.items() if p in matched}
