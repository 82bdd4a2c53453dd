"""FoldMatmulScale: move scalar-constant scales of matmul operands after the matmul.

Attention scales its queries and keys before the product:
``matmul(q * c, k * c)`` (or ``q / c``). Since ``(a * c) @ (b * d) = (a @ b) * (c * d)``,
the pass rewrites it to ``matmul(q, k) * (c * d)``: one scalar multiply right after the
matmul, which the pattern table fuses as the matmul's ``output_scale``. An operand is
folded only when the scale is a one-element floating constant that does not broadcast
the operand (same shape and dtype before and after) and the scaled tensor is used by
the matmul alone (else the scaled tensor would be computed anyway). A matmul result
divided by a scalar constant (``scores / sqrt(d)``) becomes a multiply by its reciprocal,
the form the pattern table fuses.
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .. import relax_utils as ru
from .rewrite_helpers import rewrite_relax_functions

_MULTIPLY = tvm.ir.Op.get("relax.multiply")
_DIVIDE = tvm.ir.Op.get("relax.divide")
_MATMUL = tvm.ir.Op.get("relax.matmul")


def _scalar(expr: relax.Expr) -> float | None:
    if not ru.is_constant(expr) or ru.dtype(expr) not in ("float32", "float64", "float16"):
        return None
    return ru.scalar_value(expr)


def _unscaled(value: relax.Expr) -> tuple[relax.Expr, float] | None:
    """``(x, c)`` when ``value`` is ``x * c``, ``c * x`` or ``x / c`` (c a scalar
    constant, the result of x's shape and dtype), else None."""
    if not isinstance(value, relax.Call) or value.op not in (_MULTIPLY, _DIVIDE):
        return None
    a, b = value.args
    if value.op == _DIVIDE:
        c = _scalar(b)
        found = (a, 1.0 / c) if c not in (None, 0.0) else None
    elif _scalar(b) is not None:
        found = (a, _scalar(b))
    elif _scalar(a) is not None:
        found = (b, _scalar(a))
    else:
        return None
    if found is None or not tvm_ffi.structural_equal(found[0].ty, value.ty):
        return None
    return found


def _use_counts(func: relax.Function) -> dict[relax.Var, int]:
    """How many bindings (and the function's result) use each variable."""
    counts: dict[relax.Var, int] = {}
    values = [b.value for block in func.body.blocks for b in block.bindings]
    for value in [*values, func.body.body]:
        for var in relax.analysis.free_vars(value):
            counts[var] = counts.get(var, 0) + 1
    return counts


@mutator
class _Folder(PyExprMutator):
    def __init__(self, func: relax.Function):
        super().__init__()
        self.var2val = relax.analysis.get_var2val(func)
        self.uses = _use_counts(func) if isinstance(func.body, relax.SeqExpr) else {}

    def _operand(self, arg: relax.Expr) -> tuple[relax.Expr, float]:
        if isinstance(arg, relax.Var) and self.uses.get(arg, 0) == 1:
            found = _unscaled(self.var2val.get(arg))
            if found is not None:
                return found
        return arg, 1.0

    def _divided_product(self, call: relax.Call) -> relax.Expr | None:
        """``matmul(a, b) / c`` as ``matmul(a, b) * (1 / c)``: the multiply form is the one
        fused as the matmul's output scale (within an ulp of the division)."""
        product, divisor = call.args
        c = _scalar(divisor)
        value = self.var2val.get(product) if isinstance(product, relax.Var) else None
        if c in (None, 0.0) or not isinstance(value, relax.Call) or value.op != _MATMUL:
            return None
        if self.uses.get(product, 0) != 1 or not tvm_ffi.structural_equal(call.ty, product.ty):
            return None
        dtype = ru.dtype(product)
        return relax.op.multiply(product, relax.const(np.array(1.0 / c, dtype=dtype), dtype))

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op == _DIVIDE:
            folded = self._divided_product(call)
            return call if folded is None else folded
        if call.op != _MATMUL or len(call.args) != 2:
            return call
        (a, sa), (b, sb) = self._operand(call.args[0]), self._operand(call.args[1])
        if sa == 1.0 and sb == 1.0:
            return call
        product = self.builder_.emit(relax.op.matmul(a, b, call.attrs.out_dtype))
        if not tvm_ffi.structural_equal(product.ty, call.ty):
            return call
        # the product's dtype: ``call`` rebuilt by the mutator may not carry its type yet
        dtype = ru.dtype(product)
        scale = relax.const(np.array(sa * sb, dtype=dtype), dtype)
        return relax.op.multiply(product, scale)


def _rewrite(func: relax.Function) -> relax.Function:
    return _Folder(func).visit_expr(func)


@tvm.transform.module_pass(opt_level=0, name="FoldMatmulScale")
class FoldMatmulScale:
    """Rewrite ``matmul(a * c, b * d)`` into ``matmul(a, b) * (c * d)`` (c, d scalar
    constants, also ``a / c``)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(mod, _rewrite)
