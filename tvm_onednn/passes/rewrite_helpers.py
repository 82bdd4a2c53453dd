"""The shared shell of our function-level passes."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax


def rewrite_relax_functions(
    mod: tvm.IRModule,
    rewrite: Callable[[relax.Function], relax.Function],
    eliminate_dead_code: bool = True,
) -> tvm.IRModule:
    """A new module with ``rewrite`` applied to every Relax function of ``mod``.

    ``mod`` itself is left untouched; bindings the rewrite made unused are removed.
    """
    updated = {
        gv: rewrite(func) for gv, func in mod.functions.items() if isinstance(func, relax.Function)
    }
    new_mod = tvm.IRModule({**dict(mod.functions.items()), **updated}, attrs=mod.attrs)
    return relax.transform.DeadCodeElimination()(new_mod) if eliminate_dead_code else new_mod


# What ``relax.dpl.rewrite_call`` hands a rewriter is not always the call a pattern
# describes: the root may arrive as a variable bound to it (``y = lv`` after ``lv =
# minimum(...)``), a sub-pattern's match as the variable bound to that call, and a
# ``wildcard()``'s match for a variable bound by ``MatchCast`` as the *un-cast* value,
# whose type lacks the cast's shape (a rewrite built on it is ill-formed). These helpers
# get back to the calls, and to the operands exactly as the function has them.


def bound_calls(func: relax.Function) -> dict[relax.Var, relax.Call]:
    """Each variable of ``func``'s body bound to a call (by a plain binding), with the call."""
    if not isinstance(func.body, relax.SeqExpr):
        return {}
    return {
        binding.var: binding.value
        for block in func.body.blocks
        for binding in block.bindings
        if isinstance(binding, relax.VarBinding) and isinstance(binding.value, relax.Call)
    }


def as_call(expr: relax.Expr, calls: dict[relax.Var, relax.Call]) -> relax.Expr:
    """``expr``, or the call it names when it is a variable in ``calls``."""
    while isinstance(expr, relax.Var) and expr in calls:
        expr = calls[expr]
    return expr


def matched_operand(call: relax.Call, other: relax.Expr) -> relax.Expr:
    """The argument of a binary ``call`` that is not ``other`` (a matched constant)."""
    a, b = call.args
    return b if a.same_as(other) else a
