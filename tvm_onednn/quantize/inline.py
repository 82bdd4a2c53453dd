"""Rewriting a chain-grouped module back into plain Relax ops.

The quantizer groups the prepared module's chains with the float32 pattern table
(:func:`tvm_onednn.quantize.annotate.group_chains`), so that it quantizes exactly the
chains oneDNN fuses. Both the calibration module and the QDQ module are then written by
inlining each composite call back into ``main``; subclasses of :class:`CompositeInliner`
choose what to emit around the chains.
"""

from __future__ import annotations

from collections.abc import Mapping

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator

__all__ = ["CompositeInliner", "composite_of", "with_main"]


def composite_of(mod: tvm.IRModule, value: relax.Expr) -> relax.Function | None:
    """The composite function ``value`` calls, or None when it is not a composite call."""
    if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar)):
        return None
    func = mod[value.op]
    if isinstance(func, relax.Function) and func.attrs and "Composite" in func.attrs:
        return func
    return None


def with_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    """A new module: ``mod``'s functions with ``main`` replaced and the composites dropped."""
    functions = {
        gv: func
        for gv, func in mod.functions.items()
        if gv.name_hint != "main"
        and not (isinstance(func, relax.Function) and func.attrs and "Composite" in func.attrs)
    }
    new = tvm.IRModule(functions, attrs=mod.attrs)
    new["main"] = main
    return new


class CompositeInliner(PyExprMutator):
    """Base mutator: composite calls in ``main`` are replaced by the ops they wrap.

    Subclasses must be decorated with ``@relax.expr_functor.mutator`` and may override
    :meth:`emit_composite` to emit something else for a given binding.
    """

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod

    # --- hooks -------------------------------------------------------------------------

    def emit_composite(self, binding: relax.VarBinding, func: relax.Function) -> relax.Expr:
        """The new value bound to ``binding.var`` (default: the composite's ops, inlined)."""
        args = [self.visit_expr(a) for a in binding.value.args]
        return self.inline(func, dict(zip(func.params, args)))

    def after_binding(self, var: relax.Var, new_var: relax.Var) -> None:
        """Called once ``var`` (a binding of the input module) is bound to ``new_var``."""

    # --- machinery ---------------------------------------------------------------------

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        func = composite_of(self.mod, binding.value)
        if func is None:
            super().visit_var_binding_(binding)
            # A use-site visit gives the re-emitted var (get_var_remap would insert a null
            # entry for a var that kept its identity).
            new_var = self.visit_expr(binding.var)
        else:
            new_var = self.bind(binding.var, self.emit_composite(binding, func))
        self.after_binding(binding.var, new_var)

    def bind(self, var: relax.Var, value: relax.Expr) -> relax.Var:
        """Emit ``value`` as the new binding of ``var`` (same name, same visibility)."""
        builder = self.builder_
        if isinstance(var, relax.DataflowVar) or not builder.current_block_is_dataflow():
            new_var = builder.emit(value, var.name)
        else:
            new_var = builder.emit_output(value, var.name)
        self.set_var_remap(var, new_var)
        return new_var

    def emit(self, value: relax.Expr, name_hint: str = "") -> relax.Var:
        """Emit an intermediate value (visible inside the current block only)."""
        return self.builder_.emit(value, name_hint)

    def inline(
        self,
        func: relax.Function,
        params: Mapping[relax.Var, relax.Expr],
        replace: Mapping[relax.Expr, relax.Expr] | None = None,
        operands: Mapping[relax.Expr, Mapping[int, relax.Expr]] | None = None,
    ) -> relax.Expr:
        """Emit ``func``'s bindings with ``params`` (and ``replace``d constants) substituted.

        Returns the value of the function's result, not yet bound, so that the caller binds
        it under its own name. ``replace`` maps expressions of the body (by identity, e.g.
        a weight constant) to their replacement. ``operands`` replaces arguments of one call
        of the body only (call or its bound var -> {argument index: new argument}), for a
        parameter that the call must read differently from the rest of the body.
        """
        local: dict[relax.Var, relax.Expr] = dict(params)
        replace = replace or {}
        operands = operands or {}

        def subst(expr: relax.Expr) -> relax.Expr:
            for old, new in replace.items():
                if expr.same_as(old):
                    return new
            if isinstance(expr, relax.Var):
                return local[expr]
            if isinstance(expr, relax.Tuple):
                return relax.Tuple([subst(f) for f in expr.fields])
            return expr

        def rebuild(value: relax.Expr, var: relax.Var) -> relax.Expr:
            if isinstance(value, relax.Call):
                args = [subst(a) for a in value.args]
                for call, new in operands.items():
                    if call.same_as(value) or call.same_as(var):
                        args = [new.get(i, a) for i, a in enumerate(args)]
                return relax.Call(value.op, args, value.attrs, value.ty_args)
            return subst(value)

        body = func.body
        bindings = [b for block in body.blocks for b in block.bindings]
        result = body.body
        for b in bindings:
            if b.var.same_as(result):
                return rebuild(b.value, b.var)
            local[b.var] = self.emit(rebuild(b.value, b.var))
        return subst(result)
