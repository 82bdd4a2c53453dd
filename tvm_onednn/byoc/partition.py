"""partition_for_onednn: prepare, match, merge and name the oneDNN regions."""

from __future__ import annotations

import logging

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..passes import (
    CanonicalizeClip,
    CanonicalizeGelu,
    FoldBatchNormIntoConv,
    FoldConstantCalls,
    FoldConstantsWithNumpy,
    RewriteStackSum,
)
from .chains import BACKEND
from .patterns import pattern_table
from .qpartition import composite_functions, fuse_quantized, merge_functions, split_composites


logger = logging.getLogger(__name__)


def prepare_for_onednn(mod: tvm.IRModule) -> tvm.IRModule:
    """Fold constants and BatchNorm, and canonicalize the forms the patterns read."""
    return tvm.transform.Sequential(
        [
            FoldConstantsWithNumpy(),  # the cheap bulk of folding, without compiling
            FoldConstantCalls(),  # whatever numpy does not know (TVM folds it)
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
    """Rename merged regions to ``<prefix>_0, <prefix>_1, ...`` in call order.

    Every other function (``main``, TIR functions that ``call_tir`` refers to, ...) keeps
    its GlobalVar, so the calls into it stay valid.
    """
    order = _region_order(mod)
    if not order:
        return mod
    builder = relax.BlockBuilder()
    renames = {
        gv: builder.add_func(mod[gv].with_attr("global_symbol", f"{prefix}_{i}"), f"{prefix}_{i}")
        for i, gv in enumerate(order)
    }
    return _replace_functions(mod, builder.finalize(), renames)


def _replace_functions(
    mod: tvm.IRModule, new: tvm.IRModule, renames: dict[tvm.ir.GlobalVar, tvm.ir.GlobalVar]
) -> tvm.IRModule:
    """``mod`` with each function in ``renames`` replaced by ``new``'s function under the
    new GlobalVar; calls of the old ones in the other functions call the new ones."""
    functions = dict(new.functions)
    renamer = _GlobalVarRenamer(mod, renames)
    for gv, func in mod.functions.items():
        if gv not in renames:
            functions[gv] = renamer.visit_expr(func) if isinstance(func, relax.Function) else func
    return tvm.IRModule(functions, attrs=mod.attrs)


@tvm.transform.module_pass(opt_level=0, name="PartitionForOneDNN")
class PartitionForOneDNN:
    """Offload every oneDNN-fusable chain into ``Codegen="onednn"`` region functions.

    Steps: int8 (QDQ) chains are matched first and set aside (``FoldConstant`` would turn
    their int8 weights into float32), the rest is prepared (:func:`prepare_for_onednn`),
    the float32 table is matched, neighbouring composites are merged into regions and the
    regions are named ``onednn_0, onednn_1, ...`` in call order. Every other function of
    the module (TIR functions that ``call_tir`` refers to, ...) is carried through.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod, int8_composites = split_composites(fuse_quantized(mod))
        mod = merge_functions(prepare_for_onednn(mod), int8_composites)
        mod = relax.transform.FuseOpsByPattern(
            pattern_table(), bind_constants=True, annotate_codegen=False
        )(mod)
        return name_regions(merge_composites(mod))


def merge_composites(mod: tvm.IRModule) -> tvm.IRModule:
    """Group neighbouring composites into ``Codegen="onednn"`` regions.

    TVM's ``MergeCompositeFunctions`` rejects some valid modules (``main`` calling an
    ``ExternFunc`` through ``call_dps_packed``, ``MatchCast`` bindings); those get one region
    per composite instead, which runs the same kernels with a layout reorder more between
    neighbours.
    """
    if not composite_functions(mod):
        return mod
    try:
        return relax.transform.MergeCompositeFunctions()(mod)
    except (RuntimeError, TypeError) as err:  # TVM raises InternalError (a RuntimeError)
        logger.info("MergeCompositeFunctions failed (%s); one region per composite", err)
        return wrap_composites(mod)


def wrap_composites(mod: tvm.IRModule) -> tvm.IRModule:
    """Each composite function in a region function of its own (``Codegen="onednn"``)."""
    composites = composite_functions(mod)
    builder = relax.BlockBuilder()
    renames = {}
    for gv, composite in composites.items():
        params = [relax.Var(p.name, p.ty) for p in composite.params]
        with builder.function(gv.name_hint, params, {"Codegen": BACKEND}, private=True):
            with builder.dataflow():
                local = builder.emit(composite, "composite")
                out = builder.emit_output(relax.Call(local, params))
            builder.emit_func_output(out)
        renames[gv] = builder.get().get_global_var(gv.name_hint)
    return _replace_functions(mod, builder.finalize(), renames)


def partition_for_onednn(mod: tvm.IRModule) -> tvm.IRModule:
    """Offload every oneDNN-fusable chain of ``mod`` into ``Codegen="onednn"`` regions.

    Returns a new module; ``mod`` is not modified. Composites that sit next to each
    other are merged into one region, so blocked layouts stay inside it.
    """
    return PartitionForOneDNN()(mod)
