"""FoldConstantCalls: TVM's ``FoldConstant``, shown only the calls it can actually fold.

``relax.transform.FoldConstant`` legalizes *every* operator call of a dataflow block before
it looks at the arguments, and legalization (``BlockBuilder.call_te``) asserts on any
tensor whose shape is not a ``ShapeExpr``: one ``R.Tensor(ndim=3)`` value (a YOLOv8
import has eleven, downstream of the box ``chunk``'s Slice with run-time bounds, a
``dynamic_strided_slice``) and the whole pass dies with ``emit_te now only supports Tensor
that has ShapeExpr shape``, folding nothing. It also legalizes every conv of the model
just to throw the result away.

This pass selects the calls whose inputs are all constants (or bindings already selected)
and whose result has a static shape, copies them into a scratch function, runs
``FoldConstant`` on that alone, and puts back every result that became a constant. Like
``FoldConstant``, it folds in dataflow blocks only and inlines constant-bound variables
into their uses. Everything else is left exactly as it was.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from .. import relax_utils as ru
from .rewrite_helpers import rewrite_relax_functions

_LITERALS = (Constant, tirx.IntImm, tirx.FloatImm, tvm.ir.StringImm)


def _is_static_shape(expr: relax.Expr) -> bool:
    return isinstance(expr, relax.ShapeExpr) and all(
        isinstance(d, tirx.IntImm) for d in expr.values
    )


def _is_constant_input(arg: relax.Expr, selected: set, prim_funcs: set) -> bool:
    if isinstance(arg, relax.Tuple):
        return all(_is_constant_input(f, selected, prim_funcs) for f in arg.fields)
    if isinstance(arg, relax.Var):
        return arg in selected
    if isinstance(arg, tvm.ir.GlobalVar):  # the callee of call_tir
        return arg in prim_funcs
    return isinstance(arg, _LITERALS) or _is_static_shape(arg)


def _has_static_result(binding: relax.VarBinding) -> bool:
    if isinstance(binding.var.ty, relax.ShapeType):
        # tensor_to_shape of a constant; FoldConstant reads its data as int64 unchecked
        value = binding.value
        return (
            isinstance(value, relax.Call)
            and value.op == tvm.ir.Op.get("relax.tensor_to_shape")
            and ru.dtype(value.args[0]) == "int64"
        )
    return ru.static_shape(binding.var) is not None


def _computable_from_constants(binding, selected: set, prim_funcs: set) -> bool:
    if not isinstance(binding, relax.VarBinding) or not _has_static_result(binding):
        return False
    value = binding.value
    if isinstance(value, Constant):
        return True
    return (
        isinstance(value, relax.Call)
        and isinstance(value.op, tvm.ir.Op)
        and all(_is_constant_input(a, selected, prim_funcs) for a in value.args)
    )


def _foldable_bindings(func: relax.Function, prim_funcs: set) -> list[relax.VarBinding]:
    """Dataflow bindings computable from constants alone, in program order."""
    selected: set = set()
    bindings = []
    for block in func.body.blocks if isinstance(func.body, relax.SeqExpr) else []:
        if not isinstance(block, relax.DataflowBlock):
            continue
        for binding in block.bindings:
            if _computable_from_constants(binding, selected, prim_funcs):
                selected.add(binding.var)
                bindings.append(binding)
    return bindings


def _fold_with_tvm(bindings: list[relax.VarBinding], mod: tvm.IRModule) -> dict:
    """``{var: constant}`` for the bindings FoldConstant turned into constants."""
    out = relax.Var("folded", relax.TupleType([b.var.ty for b in bindings]))
    tuple_binding = relax.VarBinding(out, relax.Tuple([b.var for b in bindings]))
    block = relax.DataflowBlock([*bindings, tuple_binding])
    scratch = relax.Function([], relax.SeqExpr([block], out), out.ty)
    scratch = relax.BlockBuilder().normalize(scratch)  # types the tuple
    scratch_mod = tvm.IRModule(
        {gv: f for gv, f in mod.functions.items() if not isinstance(f, relax.Function)}
    )
    scratch_mod["fold_scratch"] = scratch
    folded = relax.transform.FoldConstant()(scratch_mod)["fold_scratch"]
    var2val = relax.analysis.get_var2val(folded)
    fields = var2val[folded.body.body].fields
    result = {}
    for binding, field in zip(bindings, fields):
        value = var2val.get(field, field) if isinstance(field, relax.Var) else field
        if isinstance(value, Constant) or _is_static_shape(value):
            result[binding.var] = value
    return result


@mutator
class _InlineConstants(PyExprMutator):
    """Replace uses of folded (and constant-bound) variables by their values."""

    def __init__(self, mod: tvm.IRModule, folded: dict):
        super().__init__(mod)
        self.folded = dict(folded)

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.folded.get(var, var)

    def visit_dataflow_var_(self, var: relax.Var) -> relax.Expr:
        return self.folded.get(var, var)

    def visit_var_binding_(self, binding) -> None:
        if isinstance(binding.value, Constant) or _is_static_shape(binding.value):
            self.folded.setdefault(binding.var, binding.value)
        super().visit_var_binding_(binding)


def _fold_function(func: relax.Function, mod: tvm.IRModule) -> relax.Function:
    prim_funcs = {gv for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    bindings = _foldable_bindings(func, prim_funcs)
    if not any(isinstance(b.value, relax.Call) for b in bindings):
        folded = {}
    else:
        folded = _fold_with_tvm(bindings, mod)
    return _InlineConstants(mod, folded).visit_expr(func)


@tvm.transform.module_pass(opt_level=0, name="FoldConstantCalls")
class FoldConstantCalls:
    """Fold calls on constants with TVM's ``FoldConstant``, safely on unknown shapes."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(mod, lambda func: _fold_function(func, mod))
