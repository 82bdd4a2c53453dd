"""Matching the int8 table ahead of ``prepare_for_onednn``.

``relax.transform.FoldConstant`` evaluates ``dequantize(int8 constant, scales)`` into a
float32 constant wherever it finds one, *including inside composite functions* that
``FuseOpsByPattern`` already created. So the int8 chains are matched first
(:func:`fuse_quantized`), while their weights are still int8 constants, and their composite
functions are set aside (:func:`split_composites`) while the preparation passes
(FoldConstant, BatchNorm folding, canonicalizations) run on the rest of the module, then put
back (:func:`merge_functions`). Setting them aside also spares FoldConstant from compiling
one dequantize kernel per weight only to have the result thrown away. Float32 modules
contain no QDQ chains: for them all three steps return the module unchanged.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .qpatterns import qpattern_table


def composite_functions(mod: tvm.IRModule) -> dict[tvm.ir.GlobalVar, relax.Function]:
    """The functions of ``mod`` that ``FuseOpsByPattern`` made (``Composite`` attribute)."""
    return {
        gv: func
        for gv, func in mod.functions.items()
        if isinstance(func, relax.Function) and func.attrs and "Composite" in func.attrs
    }


def fuse_quantized(mod: tvm.IRModule) -> tvm.IRModule:
    """Wrap every int8 chain / pool / boundary op of ``mod`` into an int8 composite.

    Returns ``mod`` itself when it holds no quantize/dequantize at all (float32 modules).
    """
    if not _has_qdq(mod):
        return mod
    return relax.transform.FuseOpsByPattern(
        qpattern_table(), bind_constants=True, annotate_codegen=False
    )(mod)


def split_composites(
    mod: tvm.IRModule,
) -> tuple[tvm.IRModule, dict[tvm.ir.GlobalVar, relax.Function]]:
    """``mod`` without its composite functions (``main`` still calls them), and those."""
    composites = composite_functions(mod)
    if not composites:
        return mod, {}
    rest = {gv: f for gv, f in mod.functions.items() if gv not in composites}
    return tvm.IRModule(rest, attrs=mod.attrs), composites


def merge_functions(
    mod: tvm.IRModule, functions: dict[tvm.ir.GlobalVar, relax.Function]
) -> tvm.IRModule:
    """``mod`` with ``functions`` added under their GlobalVars (a new module)."""
    if not functions:
        return mod
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in functions.items():
        mod[gv] = func
    return mod


def _has_qdq(mod: tvm.IRModule) -> bool:
    found = []

    def visit(expr):
        op = expr.op if isinstance(expr, relax.Call) else None
        if isinstance(op, tvm.ir.Op) and op.name in ("relax.quantize", "relax.dequantize"):
            found.append(expr)

    for func in mod.functions.values():
        if isinstance(func, relax.Function) and not found:
            relax.analysis.post_order_visit(func, visit)
    return bool(found)
