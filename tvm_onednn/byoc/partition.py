"""partition_for_onednn: prepare, match, merge and name the oneDNN regions."""

from __future__ import annotations

import logging

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .. import relax_utils as ru
from ..passes import (
    CanonicalizeClip,
    CanonicalizeGelu,
    CanonicalizeGeluTanh,
    FoldBatchNormIntoConv,
    FoldConstantCalls,
    FoldConstantsWithNumpy,
    FoldMatmulScale,
    RewriteStackSum,
)
from .chains import BACKEND, FPMATH_ATTR
from .merge_guard import hide_unmergeable, restore_hidden
from .patterns import composite_annotations, offload_pattern_table
from .qpartition import composite_functions, fuse_quantized, merge_functions, split_composites
from .tpatterns import LIGHT_COMPOSITES


logger = logging.getLogger(__name__)

#: Module attribute: the math of an int8 model's float32 activation-by-activation matmuls,
#: ``"bf16"`` or ``"f32"`` (set by ``quantize(float_matmul_math=...)``).
FLOAT_MATMUL_MATH_ATTR = "onednn_float_matmul_math"


def prepare_for_onednn(mod: tvm.IRModule) -> tvm.IRModule:
    """Fold constants and BatchNorm, and canonicalize the forms the patterns read."""
    return tvm.transform.Sequential(
        [
            FoldConstantsWithNumpy(),  # the cheap bulk of folding, without compiling
            FoldConstantCalls(),  # whatever numpy does not know (TVM folds it)
            CanonicalizeClip(),
            CanonicalizeGelu(),
            CanonicalizeGeluTanh(),
            RewriteStackSum(),
            FoldBatchNormIntoConv(),
            FoldConstantsWithNumpy(),
            FoldMatmulScale(),  # after folding: the scales must be constants
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
    the float32 table is matched, neighbouring composites are merged into regions, regions
    of element-wise and layout ops only go back to TVM (:func:`inline_light_regions`) and
    the regions are named ``onednn_0, onednn_1, ...`` in call order. Every other function of
    the module (TIR functions that ``call_tir`` refers to, ...) is carried through.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod, int8_composites = split_composites(fuse_quantized(mod))
        mod = merge_functions(prepare_for_onednn(mod), int8_composites)
        mod = relax.transform.FuseOpsByPattern(
            offload_pattern_table(), bind_constants=True, annotate_codegen=False
        )(mod)
        mod = mark_float_matmul_math(mod)
        mod = inline_shape_arguments(mod)
        return name_regions(inline_light_regions(merge_composites(mod)))


def mark_float_matmul_math(mod: tvm.IRModule) -> tvm.IRModule:
    """Give the float32 matmul composites of two activations the math the module asks for.

    ``quantize()`` sets the module attribute :data:`FLOAT_MATMUL_MATH_ATTR` (``"bf16"``) on
    an int8 model: its float32 activation-by-activation matmuls (attention scores and
    context) then carry ``FPMATH_ATTR`` and the runtime lets oneDNN compute them with
    bfloat16 operands (on AMX). Matmuls with constant weights stay float32: in an int8
    model those are layers kept float32 on purpose.
    """
    math = mod.attrs.get(FLOAT_MATMUL_MATH_ATTR) if mod.attrs is not None else None
    if math is None or str(math) == "f32":
        return mod
    marked = {}
    for gv, func in mod.functions.items():
        name = func.attrs.get("Composite") if func.attrs is not None else None
        if name is None or not str(name).startswith(f"{BACKEND}.matmul"):
            continue
        annotated = composite_annotations(func)
        if annotated is not None and not ru.is_constant(annotated["rhs"]):
            marked[gv] = func.with_attr(FPMATH_ATTR, str(math))
    if not marked:
        return mod
    mod = mod.clone()  # a new module: the caller's stays as it was
    for gv, func in marked.items():
        mod[gv] = func
    return mod


def merge_composites(mod: tvm.IRModule) -> tvm.IRModule:
    """Group neighbouring composites into ``Codegen="onednn"`` regions.

    TVM's ``MergeCompositeFunctions`` rejects some valid modules (``main`` calling an
    ``ExternFunc`` through ``call_dps_packed``, ``MatchCast`` bindings); those get one region
    per composite instead, which runs the same kernels with a layout reorder more between
    neighbours. Calls it cannot read but need not see are hidden from it
    (:mod:`tvm_onednn.byoc.merge_guard`).
    """
    if not composite_functions(mod):
        return mod
    try:
        hidden_mod, hidden = hide_unmergeable(mod)
        return restore_hidden(relax.transform.MergeCompositeFunctions()(hidden_mod), hidden)
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


@mutator
class _VarSubstituter(PyExprMutator):
    def __init__(self, env: dict):
        super().__init__()
        self.env = env

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.env.get(var, var)


@mutator
class _ShapeArgumentRemover(PyExprMutator):
    """Calls the composites in ``renames`` (new functions) without their shape arguments."""

    def __init__(self, mod: tvm.IRModule, renames: dict, dropped: dict):
        super().__init__(mod)
        self.renames = renames
        self.dropped = dropped

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.GlobalVar) and call.op in self.renames:
            args = [a for i, a in enumerate(call.args) if i not in self.dropped[call.op]]
            return relax.Call(self.renames[call.op], args)
        return call


def inline_shape_arguments(mod: tvm.IRModule) -> tvm.IRModule:
    """Composites take their literal shape arguments (``reshape(x, R.shape([b, s, 12, 32]))``)
    inside their body instead of as parameters: a region's inputs are tensors only.

    A composite (FuseOpsByPattern shares one between identical matches) that ``main``
    calls with the same ``ShapeExpr`` argument everywhere gets it substituted for the
    parameter; its dims are symbols that the other parameters' shapes
    define (the reshape check requires it).
    """
    if "main" not in [gv.name_hint for gv in mod.functions]:
        return mod
    calls: dict[tvm.ir.GlobalVar, list[relax.Call]] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar):
            calls.setdefault(expr.op, []).append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    builder = relax.BlockBuilder()
    renames, dropped = {}, {}
    for gv, sites in calls.items():
        func = mod[gv]
        if not (func.attrs and "Composite" in func.attrs):
            continue
        shapes = {
            i: a
            for i, a in enumerate(sites[0].args)
            if isinstance(a, relax.ShapeExpr)
            and all(tvm_ffi.structural_equal(site.args[i], a) for site in sites)
        }
        if not shapes:
            continue
        # The parameter's type spells the shape in the composite's own symbolic vars.
        env = {
            func.params[i]: relax.ShapeExpr(func.params[i].ty.values)
            for i in shapes
            if func.params[i].ty.values is not None
        }
        shapes = {i: shapes[i] for i in shapes if func.params[i] in env}
        if not shapes:
            continue
        params = [p for i, p in enumerate(func.params) if i not in shapes]
        body = _VarSubstituter(env).visit_expr(func.body)
        new_func = relax.Function(params, body, func.ret_ty, func.is_pure, func.attrs)
        renames[gv] = builder.add_func(new_func, gv.name_hint)
        dropped[gv] = set(shapes)
    if not renames:
        return mod
    functions = dict(builder.finalize().functions)
    remover = _ShapeArgumentRemover(mod, renames, dropped)
    for gv, func in mod.functions.items():
        if gv not in renames:
            functions[gv] = remover.visit_expr(func) if gv.name_hint == "main" else func
    return tvm.IRModule(functions, attrs=mod.attrs)


def region_composites(func: relax.Function) -> list[str]:
    """The composite names of the composite functions a region function holds."""
    names = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Function) and value.attrs and "Composite" in value.attrs:
                names.append(str(value.attrs["Composite"]))
    return names


def is_light_region(func: relax.Function) -> bool:
    """A region of element-wise and layout composites only (no conv, matmul, pool or
    normalization): offloading it would only add a call, so it stays with TVM."""
    names = region_composites(func)
    return bool(names) and all(name in LIGHT_COMPOSITES for name in names)


def _symbol_map(params: list[relax.Var], args: list[relax.Expr]) -> dict:
    """A function's symbolic dims -> the caller's dims, read off the shapes of its
    parameters and the arguments it is called with. Keyed by object hash: TIR variables
    compare with == into expressions, not bools."""
    found = {}
    for param, arg in zip(params, args):
        own, given = ru.shape_dims(param), ru.shape_dims(arg)
        if own is None or given is None or len(own) != len(given):
            continue
        for dim, value in zip(own, given):
            if isinstance(dim, tvm.tirx.Var):
                found[dim.__hash__()] = value if ru.is_symbolic(value) else tvm.tirx.IntImm(
                    "int64", value
                )
    return found


@mutator
class _RegionInliner(PyExprMutator):
    """Replaces calls of the given region functions by the ops of their composites."""

    def __init__(self, mod: tvm.IRModule, regions: set):
        super().__init__(mod)
        self.mod_ = mod
        self.regions = regions

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.GlobalVar) and call.op in self.regions:
            return self._inline(self.mod_[call.op], list(call.args))
        return call

    def _inline(self, func: relax.Function, args: list[relax.Expr]) -> relax.Expr:
        env: dict[relax.Var, relax.Expr] = dict(zip(func.params, args))
        dims = _symbol_map(func.params, args)

        def subst(expr: relax.Expr) -> relax.Expr:
            if isinstance(expr, relax.ShapeExpr):  # in the function's own symbols
                return relax.ShapeExpr([dims.get(d.__hash__(), d) for d in expr.values])
            if isinstance(expr, relax.Var):
                return env.get(expr, expr)
            if isinstance(expr, relax.Tuple):
                return relax.Tuple([subst(f) for f in expr.fields])
            if isinstance(expr, relax.TupleGetItem):
                return relax.TupleGetItem(subst(expr.tuple_value), expr.index)
            if isinstance(expr, relax.Call):
                op = env.get(expr.op, expr.op) if isinstance(expr.op, relax.Var) else expr.op
                new_args = [subst(a) for a in expr.args]
                if isinstance(op, relax.Function):
                    return self._inline(op, new_args)
                return relax.Call(op, new_args, expr.attrs, expr.ty_args)
            return expr

        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding.value, relax.Function):
                    env[binding.var] = binding.value
                else:
                    env[binding.var] = self.builder_.emit(subst(binding.value))
        return subst(func.body.body)


def inline_light_regions(mod: tvm.IRModule) -> tvm.IRModule:
    """Give regions of only element-wise / layout ops (:func:`is_light_region`) back to
    TVM: their calls are replaced by the original ops and the region functions dropped."""
    light = {
        gv
        for gv, func in mod.functions.items()
        if isinstance(func, relax.Function)
        and (func.attrs or {}).get("Codegen") == BACKEND
        and is_light_region(func)
    }
    if not light:
        return mod
    inliner = _RegionInliner(mod, light)
    functions = {}
    for gv, func in mod.functions.items():
        if gv in light:
            continue
        if isinstance(func, relax.Function) and not (func.attrs or {}).get("Codegen"):
            func = inliner.visit_expr(func)
        functions[gv] = func
    return tvm.IRModule(functions, attrs=mod.attrs)


def partition_for_onednn(mod: tvm.IRModule) -> tvm.IRModule:
    """Offload every oneDNN-fusable chain of ``mod`` into ``Codegen="onednn"`` regions.

    Returns a new module; ``mod`` is not modified. Composites that sit next to each
    other are merged into one region, so blocked layouts stay inside it.
    """
    return PartitionForOneDNN()(mod)
