"""Keep TVM's ``MergeCompositeFunctions`` from tripping over calls it cannot read.

``MergeCompositeFunctions`` (TVM 0.27) fails with "Could not find memo-ized group for
expression of type ir.Var" on a call whose tuple argument holds a bare TIR expression,
e.g. the ONNX importer's ``strided_slice(position_ids, (1,), (0,), (sequence,), (1,))``
in BERT models; then no composites merge at all. Such a call that reads no Relax variable
(only constants and symbolic dims) cannot take part in a region or in a cycle between
regions, so while merging it is replaced by ``zeros`` of its type and restored after.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .. import relax_utils as ru


def _bare_tir_fields(expr, relax_vars: set) -> bool:
    """Whether a tuple argument holds a TIR variable (in TVM 0.27 TIR and Relax variables
    are one class: a TIR one is bound neither as a parameter nor by a binding)."""
    if isinstance(expr, relax.Tuple):
        return any(_bare_tir_fields(f, relax_vars) for f in expr.fields)
    return isinstance(expr, relax.Var) and expr not in relax_vars


def _stand_in(call: relax.Call, relax_vars: set) -> relax.Expr | None:
    """``zeros`` of the call's type when the call is one to hide, else None."""
    tuples = [a for a in call.args if isinstance(a, relax.Tuple)]
    if not any(_bare_tir_fields(t, relax_vars) for t in tuples):
        return None
    if any(v in relax_vars for v in relax.analysis.free_vars(call)):
        return None  # it reads a Relax variable: hiding it could hide a dependency
    ty = call.ty
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    return relax.op.zeros(ty.shape, ru.dtype(call))


def _replace_values(func: relax.Function, values: dict) -> relax.Function:
    """``func`` with the bindings of the variables in ``values`` bound to those values."""
    blocks = []
    for block in func.body.blocks:
        bindings = [
            relax.VarBinding(b.var, values[b.var]) if b.var in values else b
            for b in block.bindings
        ]
        kind = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) else relax.BindingBlock
        blocks.append(kind(bindings))
    body = relax.SeqExpr(blocks, func.body.body)
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)


def hide_unmergeable(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict]:
    """``mod`` with the calls to hide in ``main`` replaced, and the originals by variable."""
    gv = mod.get_global_var("main")
    main = mod[gv]
    if not isinstance(main.body, relax.SeqExpr):
        return mod, {}
    hidden, stand_ins = {}, {}
    relax_vars = set(main.params) | {b.var for blk in main.body.blocks for b in blk.bindings}
    for block in main.body.blocks:
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding) and isinstance(binding.value, relax.Call):
                stand_in = _stand_in(binding.value, relax_vars)
                if stand_in is not None:
                    hidden[binding.var] = binding.value
                    stand_ins[binding.var] = relax.BlockBuilder().normalize(stand_in)
    if not hidden:
        return mod, {}
    new = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    new[gv] = _replace_values(main, stand_ins)
    return new, hidden


def restore_hidden(mod: tvm.IRModule, hidden: dict) -> tvm.IRModule:
    """Undo :func:`hide_unmergeable` in ``main`` (its bindings keep their variables)."""
    if not hidden:
        return mod
    gv = mod.get_global_var("main")
    main = mod[gv]
    bound = {b.var for block in main.body.blocks for b in block.bindings}
    if not set(hidden) <= bound:
        raise RuntimeError("a hidden binding did not survive merging")
    new = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    new[gv] = _replace_values(main, hidden)
    return new
