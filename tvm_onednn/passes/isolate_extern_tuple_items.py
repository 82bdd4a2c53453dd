"""IsolateExternTupleItems: items of an external call's tuple never enter a fused kernel.

A oneDNN region with several outputs is called as ``t = call_dps_packed(...)`` and its
outputs are read with ``t[k]``. ``FuseOps`` treats an item read as injective and may
fuse it into the TVM kernel that consumes it; the fused function then takes the whole
tuple as a parameter and ``FuseOps`` splits it into per-field parameters afterwards.
With two or more such tuples in one fused function, TVM 0.27 splits them by stale
positions (it visits them in pointer order, so it fails in some runs only: ``FuseTIR``
then stops with ``Check failed: buffer_idx == buffers.size()`` or ``Parameter expression
... expected ...``). Run right before ``FuseOps``, this pass binds every item of a
``call_dps_packed`` tuple to a dataflow-block output variable: ``FuseOps`` never fuses
a block output into its consumers, so kernels receive the items as plain tensors.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite_helpers import rewrite_relax_functions

_CALL_DPS_PACKED = tvm.ir.Op.get("relax.call_dps_packed")


@mutator
class _Isolator(PyExprMutator):
    def __init__(self):
        super().__init__()
        self.extern_tuples: set[relax.Var] = set()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if isinstance(value, relax.Call) and value.op.same_as(_CALL_DPS_PACKED):
            if isinstance(value.ty, relax.TupleType):
                self.extern_tuples.add(binding.var)
        elif (
            isinstance(value, relax.TupleGetItem)
            and isinstance(binding.var, relax.DataflowVar)
            and value.tuple_value in self.extern_tuples
        ):
            new_value = self.visit_expr(value)
            new_var = self.builder_.emit_output(new_value, binding.var.name)
            self.set_var_remap(binding.var, new_var)
            return
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="IsolateExternTupleItems")
class IsolateExternTupleItems:
    """Bind the items of ``call_dps_packed`` tuples to dataflow-block outputs."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(
            mod, lambda func: _Isolator().visit_expr(func), eliminate_dead_code=False
        )
