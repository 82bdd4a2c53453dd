"""CanonicalizeClip: turn the ONNX importer's clip lowering back into ``R.clip``.

The ONNX importer lowers ``Clip(x, lo, hi)`` to two ``call_tir`` kernels
(``maximum(x, lo)`` then ``minimum(., hi)``), which no pattern can read. This pass
recognizes those element-wise kernels by their TIR body and rebuilds
``R.clip(x, lo, hi)`` (or ``R.nn.relu`` for a lone ``maximum(x, 0)``).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.ir.expr import TensorLoad
from tvm.relax.dpl.pattern import is_const, is_op, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from .. import relax_utils as ru
from .rewrite_helpers import as_call, bound_calls, matched_operand, rewrite_relax_functions

_MAX_FLOAT = 3.4028234663852886e38


def _buffer_stores(stmt) -> list[tirx.BufferStore]:
    """Every BufferStore below ``stmt`` (walks blocks, loops and sequences)."""
    if isinstance(stmt, tirx.BufferStore):
        return [stmt]
    found = []
    for attr in ("block", "body"):
        child = getattr(stmt, attr, None)
        if child is not None:
            found += _buffer_stores(child)
    for child in getattr(stmt, "seq", None) or []:
        found += _buffer_stores(child)
    return found


def _scalar_binary_kind(func: tirx.PrimFunc) -> str | None:
    """'max' / 'min' when ``func`` computes ``out[i] = max|min(a[i], b[()])``, else None."""
    if len(func.params) != 3:
        return None
    a_param, b_param, out_param = func.params
    stores = _buffer_stores(func.body)
    if len(stores) != 1 or not stores[0].buffer.same_as(out_param):
        return None
    value = stores[0].value
    kind = "max" if isinstance(value, tirx.Max) else "min" if isinstance(value, tirx.Min) else None
    if kind is None or not all(isinstance(v, TensorLoad) for v in (value.a, value.b)):
        return None
    a, b = value.a, value.b
    if not (a.source.same_as(a_param) and b.source.same_as(b_param)) or len(b.indices) != 0:
        return None
    if len(a.indices) != len(stores[0].indices) or not all(
        i.same_as(j) for i, j in zip(a.indices, stores[0].indices)
    ):
        return None
    return kind


@mutator
class _CallTIRToMinMax(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.call_tir"):
            return call
        callee = self.mod_[call.args[0]] if call.args[0] in self.mod_.functions else None
        args = call.args[1]
        if not isinstance(callee, tirx.PrimFunc) or not isinstance(args, relax.Tuple):
            return call
        if len(args.fields) != 2 or ru.scalar_value(args.fields[1]) is None:
            return call
        kind = _scalar_binary_kind(callee)
        if kind is None:
            return call
        op = relax.op.maximum if kind == "max" else relax.op.minimum
        return op(args.fields[0], args.fields[1])


def _is_clip_of(expr: relax.Expr, x: relax.Expr, bounds: list[relax.Expr]) -> bool:
    """Whether ``expr`` = min/max of ``x`` and ``bounds`` is an element-wise clip of ``x``.

    The bounds must be single values, and ``expr`` of ``x``'s very type: a bound of higher
    rank than ``x`` broadcasts it to a new shape, which ``clip`` would not. Float only:
    ``clip``'s open bounds (+-FLT_MAX) do not fit an integer type.
    """
    if any(ru.scalar_value(b) is None for b in bounds):
        return False
    dtype = ru.dtype(x)
    if dtype is None or "float" not in dtype:
        return False
    return tvm_ffi.structural_equal(expr.ty, x.ty)


def _fold_minmax_to_clip(func: relax.Function) -> relax.Function:
    calls = bound_calls(func)
    x, lo, hi = wildcard(), is_const(), is_const()
    floor = is_op("relax.maximum")(x, lo)
    clip = is_op("relax.minimum")(floor, hi)
    ceil = is_op("relax.minimum")(x, hi)

    def to_clip(expr, m):
        data = matched_operand(as_call(m[floor], calls), m[lo])
        if not _is_clip_of(expr, data, [m[lo], m[hi]]):
            return expr
        if ru.scalar_value(m[lo]) > ru.scalar_value(m[hi]):
            return expr  # min(max(x, lo), hi) is hi everywhere; clip would give lo
        return relax.op.clip(data, ru.scalar_value(m[lo]), ru.scalar_value(m[hi]))

    def floor_to_relu_or_clip(expr, m):
        data = matched_operand(as_call(expr, calls), m[lo])
        if not _is_clip_of(expr, data, [m[lo]]):
            return expr
        low = ru.scalar_value(m[lo])
        return relax.op.nn.relu(data) if low == 0.0 else relax.op.clip(data, low, _MAX_FLOAT)

    def ceil_to_clip(expr, m):
        data = matched_operand(as_call(expr, calls), m[hi])
        if not _is_clip_of(expr, data, [m[hi]]):
            return expr
        return relax.op.clip(data, -_MAX_FLOAT, ru.scalar_value(m[hi]))

    func = relax.dpl.rewrite_call(clip, to_clip, func)
    func = relax.dpl.rewrite_call(floor, floor_to_relu_or_clip, func)
    return relax.dpl.rewrite_call(ceil, ceil_to_clip, func)


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeClip")
class CanonicalizeClip:
    """Rewrite ``call_tir(maximum/minimum, (x, scalar))`` pairs into ``R.clip``."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _CallTIRToMinMax(mod)
        return rewrite_relax_functions(
            mod, lambda func: _fold_minmax_to_clip(rewriter.visit_expr(func))
        )
