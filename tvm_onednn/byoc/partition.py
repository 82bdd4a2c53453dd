"""partition_for_onednn: prepare, match, merge and name the oneDNN regions."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..passes import (
    CanonicalizeClip,
    CanonicalizeGelu,
    FoldBatchNormIntoConv,
    FoldConstantsWithNumpy,
    RewriteStackSum,
)
from .patterns import BACKEND, pattern_table
from .qpartition import fuse_quantized, merge_functions, split_composites


def prepare_for_onednn(mod: tvm.IRModule) -> tvm.IRModule:
    """Fold constants and BatchNorm, and canonicalize the forms the patterns read."""
    return tvm.transform.Sequential(
        [
            FoldConstantsWithNumpy(),  # the cheap bulk of folding, without compiling
            relax.transform.FoldConstant(),  # whatever numpy does not know
            CanonicalizeClip(),
            CanonicalizeGelu(),
            RewriteStackSum(),
            FoldBatchNormIntoConv(),
            FoldConstantsWithNumpy(),
        ],
        name="PrepareForOneDNN",
    )(mod)


@mutator
class _GlobalVarRenamer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, renames: dict):
        super().__init__(mod)
        self.renames = renames

    def visit_global_var_(self, gv):
        return self.renames.get(gv, gv)


def _region_order(mod: tvm.IRModule) -> list[tvm.ir.GlobalVar]:
    """Region functions in the order ``main`` calls them (stable across runs)."""
    regions = {
        gv for gv, f in mod.functions.items() if f.attrs and f.attrs.get("Codegen") == BACKEND
    }
    order: list[tvm.ir.GlobalVar] = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar):
            if expr.op in regions and expr.op not in order:
                order.append(expr.op)

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function) and gv not in regions:
            relax.analysis.post_order_visit(func, visit)
    return order


def name_regions(mod: tvm.IRModule, prefix: str = BACKEND) -> tvm.IRModule:
    """Rename merged regions to ``<prefix>_0, <prefix>_1, ...`` in call order."""
    order = _region_order(mod)
    builder = relax.BlockBuilder()
    renames = {
        gv: builder.add_func(mod[gv].with_attr("global_symbol", f"{prefix}_{i}"), f"{prefix}_{i}")
        for i, gv in enumerate(order)
    }
    renamer = _GlobalVarRenamer(mod, renames)
    for gv, func in mod.functions.items():
        if gv in renames:
            continue
        if isinstance(func, relax.Function):
            func = renamer.visit_expr(func)
        builder.add_func(func, gv.name_hint)
    return builder.finalize().with_attrs(mod.attrs) if mod.attrs else builder.finalize()


def partition_for_onednn(mod: tvm.IRModule) -> tvm.IRModule:
    """Offload every oneDNN-fusable chain of ``mod`` into ``Codegen="onednn"`` regions.

    Returns a new module; ``mod`` is not modified. Composites that sit next to each
    other are merged into one region, so blocked layouts stay inside it.
    """
    # int8 (QDQ) chains first, kept out of prepare: FoldConstant would make their weights f32.
    mod, int8_composites = split_composites(fuse_quantized(mod))
    mod = merge_functions(prepare_for_onednn(mod), int8_composites)
    mod = relax.transform.FuseOpsByPattern(
        pattern_table(), bind_constants=True, annotate_codegen=False
    )(mod)
    mod = relax.transform.MergeCompositeFunctions()(mod)
    return name_regions(mod)
