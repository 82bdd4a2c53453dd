"""The transformer ops of the float32 table: normalization, element-wise and layout ops.

``onednn.layer_norm``, ``onednn.softmax`` (optionally with the exporter's
``where(isnan(p), 0, p)`` guard, written as ``nan_to_zero``), standalone activations
(``onednn.gelu``, ...), broadcasting binary ops with an optional activation
(``onednn.add``, ``onednn.add_gelu``, ...), ``onednn.reshape`` and ``onednn.transpose``
(``permute_dims``). Names are the runtime's dispatch keys (``docs/subgraph-format.md``);
each check returns why the runtime cannot take a match, or None. The element-wise and
layout ops are *light*: the partition keeps a region made of light ops only with TVM
(:data:`LIGHT_COMPOSITES`), since it would only add a call.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType

import tvm
from tvm import relax
from tvm.relax.dpl.pattern import is_const, is_op, wildcard
from tvm.relax.transform import FusionPattern, PatternCheckContext

from .. import relax_utils as ru
from .chains import ACTIVATIONS, BACKEND, Pattern
from .checks import (
    FLOAT_DTYPES,
    leaks_intermediate,
    make_check,
    why_not_activation,
    why_not_symbols,
)

logger = logging.getLogger(__name__)

#: Standalone activations of the contract: composite suffix -> activation table entry.
STANDALONE_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "sigmoid", "tanh", "silu")
#: Broadcasting binary ops: composite suffix -> Relax op.
BINARY_OPS: Mapping[str, str] = MappingProxyType(
    {
        "add": "relax.add",
        "subtract": "relax.subtract",
        "multiply": "relax.multiply",
        "divide": "relax.divide",
        "maximum": "relax.maximum",
        "minimum": "relax.minimum",
    }
)
LAYER_NORM = f"{BACKEND}.layer_norm"
SOFTMAX = f"{BACKEND}.softmax"
RESHAPE = f"{BACKEND}.reshape"
TRANSPOSE = f"{BACKEND}.transpose"


def binary_name(op: str, activation: str | None = None) -> str:
    return f"{BACKEND}.{op}" + (f"_{activation}" if activation else "")


def activation_name(activation: str) -> str:
    return f"{BACKEND}.{activation}"


# ----------------------------------------------------------------------------------------
# Pattern builders: each returns the pattern and its named sub-patterns (``root`` is the
# op the composite is named after, ``data`` / ``lhs`` / ``rhs`` its operands).


def layer_norm_pattern() -> Pattern:
    data, gamma, beta = wildcard(), is_const(), is_const()
    root = is_op("relax.nn.layer_norm")(data, gamma, beta)
    return root, {"data": data, "gamma": gamma, "beta": beta, "root": root}


def softmax_pattern(nan_to_zero: bool) -> Pattern:
    """``softmax(x)``, or with ``nan_to_zero`` the exporter's guard after it:
    ``where(isnan(s), 0, s)``."""
    data = wildcard()
    root = is_op("relax.nn.softmax")(data)
    annotations = {"data": data, "root": root}
    if not nan_to_zero:
        return root, annotations
    zero = is_const()
    guarded = is_op("relax.where")(is_op("relax.isnan")(root), zero, root)
    annotations.update(zero=zero, guard=guarded)
    return guarded, annotations


def activation_pattern(activation: str) -> Pattern:
    data = wildcard()
    out, parts = ACTIVATIONS[activation](data)
    return out, {"data": data, "root": out, "activation": out, **parts}


def binary_pattern(op: str, activation: str | None) -> Pattern:
    lhs, rhs = wildcard(), wildcard()
    root = is_op(BINARY_OPS[op])(lhs, rhs)
    annotations = {"lhs": lhs, "rhs": rhs, "root": root}
    out = root
    if activation:
        out, parts = ACTIVATIONS[activation](root)
        annotations.update(parts, activation=out)
    return out, annotations


def reshape_pattern() -> Pattern:
    data = wildcard()
    root = is_op("relax.reshape")(data, wildcard())
    return root, {"data": data, "root": root}


def transpose_pattern() -> Pattern:
    data = wildcard()
    root = is_op("relax.permute_dims")(data)
    return root, {"data": data, "root": root}


# ----------------------------------------------------------------------------------------
# Checks.


def why_not_tensor(expr: relax.Expr, what: str) -> str | None:
    """A float32 tensor whose dims are static or plain symbolic variables."""
    if ru.dtype(expr) not in FLOAT_DTYPES:
        return f"{what} has dtype {ru.dtype(expr)} (runtime runs {FLOAT_DTYPES})"
    return ru.why_not_plain_dims(ru.shape_dims(expr))


def _why_not_tensors(root: relax.Expr, operands: list[relax.Expr]) -> str | None:
    for expr, what in [(root, "the output"), *((e, "an operand") for e in operands)]:
        reason = why_not_tensor(expr, what)
        if reason:
            return reason
    for expr in operands:
        if ru.is_constant(expr) and ru.symbolic_dims(ru.shape_dims(expr)):
            return "a constant operand needs static dims"
    return why_not_symbols(root, [e for e in operands if not ru.is_constant(e)])


def why_not_layer_norm(call: relax.Call) -> str | None:
    """oneDNN layer_normalization normalizes over the last axis, with scale and shift."""
    data, gamma, beta = call.args
    reason = _why_not_tensors(call, [data])
    if reason:
        return reason
    dims = ru.shape_dims(data)
    axes = [int(a) % len(dims) for a in call.attrs.axes]
    if axes != [len(dims) - 1]:
        return "layer_norm is offloaded over the last axis only"
    if not (call.attrs.center and call.attrs.scale):
        return "layer_norm is offloaded with both scale (gamma) and shift (beta) only"
    channels = dims[-1]
    if ru.is_symbolic(channels):
        return "layer_norm needs a static normalized (last) dim"
    for param, what in ((gamma, "gamma"), (beta, "beta")):
        if not ru.is_constant(param) or ru.dtype(param) not in FLOAT_DTYPES:
            return f"layer_norm's {what} must be a float32 constant"
        if ru.static_shape(param) != [channels]:
            return f"layer_norm's {what} must have shape [{channels}]"
    return None


def why_not_softmax(call: relax.Call) -> str | None:
    return _why_not_tensors(call, [call.args[0]])


def why_not_nan_guard(zero: relax.Expr) -> str | None:
    """The guard must replace NaN by exactly 0 (one scalar)."""
    value = ru.scalar_value(zero)
    if value is None or value != 0.0 or ru.dtype(zero) not in FLOAT_DTYPES:
        return "the softmax NaN guard must write a float32 scalar 0"
    return None


def why_not_unary(call: relax.Call) -> str | None:
    return _why_not_tensors(call, [call.args[0]])


def why_not_binary(call: relax.Call) -> str | None:
    """Float32 operands that broadcast (numpy rules) to the output; not both constants."""
    lhs, rhs = call.args
    if ru.is_constant(lhs) and ru.is_constant(rhs):
        return "both operands are constants (constant folding computes it)"
    reason = _why_not_tensors(call, [lhs, rhs])
    if reason:
        return reason
    out = ru.shape_dims(call)
    for operand in (lhs, rhs):
        if not _broadcasts_to(ru.shape_dims(operand), out):
            return "an operand does not broadcast to the output (numpy rules)"
    return None


def _broadcasts_to(dims: list, out: list) -> bool:
    if len(dims) > len(out):
        return False
    return all(d == 1 or ru.same_dim(d, o) for d, o in zip(reversed(dims), reversed(out)))


def why_not_reshape(call: relax.Call) -> str | None:
    """Same element count for every binding of the symbols: the same symbols on both
    sides (as many times each) and the same product of the static dims."""
    data = call.args[0]
    reason = _why_not_tensors(call, [data])
    if reason:
        return reason
    src, dst = ru.shape_dims(data), ru.shape_dims(call)
    symbols = [Counter(map(_symbol_key, ru.symbolic_dims(d))) for d in (src, dst)]
    statics = [ru.num_elements([d for d in dims if not ru.is_symbolic(d)]) for dims in (src, dst)]
    if symbols[0] != symbols[1] or statics[0] != statics[1]:
        return "reshape must keep each symbolic dim as a dim (element counts must agree)"
    return None


def _symbol_key(var: tvm.tirx.Var) -> int:
    # TIR variables compare with == into expressions, not bools: count them by object.
    return var.__hash__()


def why_not_transpose(call: relax.Call) -> str | None:
    return _why_not_tensors(call, [call.args[0]])


def why_not_output_scale(scaled: relax.Call, scale: relax.Expr) -> str | None:
    """``output_scale`` is one float: the multiply must be by a float32 scalar constant
    that does not broadcast the product."""
    if ru.scalar_value(scale) is None or ru.dtype(scale) not in FLOAT_DTYPES:
        return "a matmul output scale must be a float32 scalar constant"
    if not ru.same_dims(ru.shape_dims(scaled), ru.shape_dims(scaled.args[0])):
        return "a matmul output scale must not broadcast the product"
    return None


def why_not_broadcast_residual(
    residual: relax.Expr, residual_add: relax.Call, root: relax.Call
) -> str | None:
    """A matmul residual may broadcast to the output (numpy rules), not the other way."""
    if ru.dtype(residual) != ru.dtype(root):
        return "the residual must have the output's dtype"
    reason = ru.why_not_plain_dims(ru.shape_dims(residual))
    if reason:
        return reason
    out = ru.shape_dims(root)
    if not ru.same_dims(ru.shape_dims(residual_add), out):
        return "the residual must broadcast to the matmul's output, not widen it"
    if not _broadcasts_to(ru.shape_dims(residual), out):
        return "the residual must broadcast to the matmul's output (numpy rules)"
    if ru.is_constant(residual) and ru.symbolic_dims(ru.shape_dims(residual)):
        return "a constant residual needs static dims"
    return None


#: Relax op -> why the runtime cannot take one call of it standalone (``offload_summary``
#: asks it why an op stayed with TVM).
WHY_NOT_STANDALONE: Mapping[str, Callable[[relax.Call], "str | None"]] = MappingProxyType(
    {
        "relax.nn.layer_norm": why_not_layer_norm,
        "relax.nn.softmax": why_not_softmax,
        "relax.reshape": why_not_reshape,
        "relax.permute_dims": why_not_transpose,
        **{op: why_not_binary for op in BINARY_OPS.values()},
        **{
            op: why_not_unary
            for op in (
                "relax.nn.gelu",
                "relax.nn.gelu_tanh",
                "relax.nn.relu",
                "relax.sigmoid",
                "relax.tanh",
                "relax.nn.silu",
            )
        },
    }
)


def _check(name: str, why_not: Callable[[Mapping[str, relax.Expr]], "str | None"]):
    def why_not_match(ctx: PatternCheckContext) -> str | None:
        if leaks_intermediate(ctx):
            return "an intermediate value is used outside the match"
        return why_not(ctx.annotated_expr)

    return make_check(name, why_not_match, logger)


def _why_not_softmax_match(ann: Mapping[str, relax.Expr]) -> str | None:
    reason = why_not_softmax(ann["root"])
    if reason is None and "zero" in ann:
        reason = why_not_nan_guard(ann["zero"])
    return reason


def _why_not_binary_match(activation: str | None, ann: Mapping[str, relax.Expr]) -> str | None:
    reason = why_not_binary(ann["root"])
    if reason or not activation:
        return reason
    return why_not_activation(activation, ann)


def _why_not_activation_match(activation: str, ann: Mapping[str, relax.Expr]) -> str | None:
    return _why_not_tensors(ann["root"], [ann["data"]]) or why_not_activation(activation, ann)


# ----------------------------------------------------------------------------------------
# The table.


@functools.cache
def transformer_patterns() -> tuple[tuple[str, Pattern, Callable], ...]:
    """(name, (pattern, annotations), why_not) in priority order: layer_norm, softmax
    (guarded form first), binary ops with an activation, plain binary ops, standalone
    activations, reshape, transpose."""
    entries = [
        (LAYER_NORM, layer_norm_pattern(), lambda ann: why_not_layer_norm(ann["root"])),
        (SOFTMAX, softmax_pattern(nan_to_zero=True), _why_not_softmax_match),
        (SOFTMAX, softmax_pattern(nan_to_zero=False), _why_not_softmax_match),
    ]
    for activation in (*ACTIVATIONS, None):
        for op in BINARY_OPS:
            why_not = functools.partial(_why_not_binary_match, activation)
            entries.append((binary_name(op, activation), binary_pattern(op, activation), why_not))
    for activation in STANDALONE_ACTIVATIONS:
        why_not = functools.partial(_why_not_activation_match, activation)
        entries.append((activation_name(activation), activation_pattern(activation), why_not))
    entries.append((RESHAPE, reshape_pattern(), lambda ann: why_not_reshape(ann["root"])))
    entries.append((TRANSPOSE, transpose_pattern(), lambda ann: why_not_transpose(ann["root"])))
    return tuple(entries)


def transformer_table() -> list[FusionPattern]:
    return [
        FusionPattern(name, pattern, annotations, _check(name, why_not))
        for name, (pattern, annotations), why_not in transformer_patterns()
    ]


def transformer_composite_names() -> list[str]:
    return list(dict.fromkeys(name for name, _, _ in transformer_patterns()))


#: Composites that move or combine data without real work: a region made of these only
#: stays with TVM.
LIGHT_COMPOSITES = frozenset(
    name for name in transformer_composite_names() if name not in (LAYER_NORM, SOFTMAX)
)


def transformer_annotations(func: relax.Function) -> dict[str, relax.Expr] | None:
    """The annotated expressions of a transformer composite function (the first of its
    name's patterns that matches its body), or None."""
    name = str(func.attrs["Composite"])
    for entry_name, (pattern, annotations), _ in transformer_patterns():
        if entry_name == name:
            found = ru.extract_annotations(func, pattern, annotations)
            if found is not None:
                return found
    return None
