"""RewriteStackSum: turn the ONNX importer's n-ary ``Sum`` back into ``add`` chains.

ONNX ``Sum(a, b, ...)`` imports as
``sum(stack([broadcast_to(a, S), broadcast_to(b, S), ...], axis=0), axis=0)``. That hides
ResNet's residual adds from the pattern table (light_resnet50 has 16 of them). When no
operand actually broadcasts, this is exactly ``a + b + ...``. Shapes may be symbolic
(a dim matches only the same variable); a tensor of unknown shape is left alone.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.dpl.pattern import is_op, wildcard

from .. import relax_utils as ru
from .rewrite_helpers import as_call, bound_calls, rewrite_relax_functions


def _known_shape(expr: relax.Expr) -> relax.ShapeExpr | None:
    """The tensor's shape when it is spelled out (dims may be symbolic), else None."""
    ty = expr.ty
    if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr):
        return ty.shape
    return None


def _unbroadcast(expr: relax.Expr, var2val, shape: relax.ShapeExpr) -> relax.Expr | None:
    """``expr`` without a no-op ``broadcast_to`` to ``shape``; None if it really broadcasts.

    Symbolic dims count as equal only when they are the same variable.
    """
    value = var2val.get(expr, expr)
    if isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.broadcast_to"):
        expr = value.args[0]
    own = _known_shape(expr)
    return expr if own is not None and tvm_ffi.structural_equal(own, shape) else None


def _rewrite(func: relax.Function) -> relax.Function:
    var2val = relax.analysis.get_var2val(func)
    calls = bound_calls(func)
    stack = is_op("relax.stack")(wildcard())
    pattern = is_op("relax.sum")(stack)

    def rewrite(expr: relax.Expr, m) -> relax.Expr:
        stacked, total = as_call(m[stack], calls), as_call(expr, calls)
        axis = total.attrs.axis
        if int(stacked.attrs.axis) != 0 or axis is None or [int(a) for a in axis] != [0]:
            return expr
        if total.attrs.keepdims or not isinstance(stacked.args[0], relax.Tuple):
            return expr
        shape = _known_shape(total)
        if shape is None or ru.dtype(total) != ru.dtype(stacked):
            return expr
        fields = [_unbroadcast(f, var2val, shape) for f in stacked.args[0].fields]
        if not fields or any(f is None for f in fields):
            return expr
        result = fields[0]
        for field in fields[1:]:
            result = relax.op.add(result, field)
        return result

    return relax.dpl.rewrite_call(pattern, rewrite, func)


@tvm.transform.module_pass(opt_level=0, name="RewriteStackSum")
class RewriteStackSum:
    """Replace ``sum(stack([...]), axis=0)`` of same-shaped tensors with ``add``."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(mod, _rewrite)
