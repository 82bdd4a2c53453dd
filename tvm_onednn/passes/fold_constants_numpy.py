"""FoldConstantsWithNumpy: evaluate cheap ops on constants with numpy, before FoldConstant.

TVM's ``FoldConstant`` compiles every foldable call with LLVM; ONNX imports are full of
tiny ones (each ``Clip`` bound becomes ``where(isnan(c), -inf, c)``, biases are
``reshape(c)``, Gemm weights ``permute_dims(c)``), which took ~18 s on MobileNetV2.
numpy evaluates them in microseconds; whatever this pass does not know is left for
``FoldConstant``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .. import relax_utils as ru
from .rewrite_helpers import rewrite_relax_functions


def _axes(call: relax.Call) -> list[int] | None:
    return None if call.attrs.axes is None else [int(a) for a in call.attrs.axes]


def _shape_arg(call: relax.Call) -> list[int] | None:
    shape = call.args[1]
    if not isinstance(shape, relax.ShapeExpr):
        return None
    dims = [d for d in shape.values]
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return [int(d.value) for d in dims]


_ELEMENTWISE: dict[str, Callable] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
    "relax.negative": np.negative,
    "relax.sqrt": np.sqrt,
    "relax.isnan": np.isnan,
    "relax.where": np.where,
}


def _evaluate(call: relax.Call) -> np.ndarray | None:
    op = call.op.name
    tensors = [a for a in call.args if ru.is_constant(a)]
    if op in _ELEMENTWISE:
        if len(tensors) != len(call.args):
            return None
        with np.errstate(all="ignore"):
            return _ELEMENTWISE[op](*[ru.constant_array(a) for a in tensors])
    if not tensors or not call.args[0].same_as(tensors[0]):
        return None
    data = ru.constant_array(call.args[0])
    if op == "relax.reshape":
        shape = _shape_arg(call)
        return None if shape is None else data.reshape(shape)
    if op == "relax.permute_dims":
        return np.transpose(data, _axes(call))
    if op == "relax.astype":
        return data.astype(str(call.attrs.dtype))
    return None


@mutator
class _NumpyFolder(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.folded: dict[relax.Var, relax.Expr] = {}

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.folded.get(var, var)

    def visit_dataflow_var_(self, var: relax.Var) -> relax.Expr:
        return self.folded.get(var, var)

    def visit_var_binding_(self, binding) -> None:
        value = self.visit_expr(binding.value)
        if ru.is_constant(value):
            self.folded[binding.var] = value
        super().visit_var_binding_(binding)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or ru.static_shape(call) is None:
            return call
        result = _evaluate(call)
        if result is None:
            return call
        result = np.asarray(result).astype(ru.dtype(call)).reshape(ru.static_shape(call))
        return relax.const(result, ru.dtype(call))


@tvm.transform.module_pass(opt_level=0, name="FoldConstantsWithNumpy")
class FoldConstantsWithNumpy:
    """Fold element-wise/reshape/transpose/cast ops on constants with numpy."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(mod, _NumpyFolder(mod).visit_expr)
