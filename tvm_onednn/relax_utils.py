"""Small helpers for reading Relax expressions (shapes, dtypes, constants)."""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.sym import Analyzer


def is_constant(expr: relax.Expr) -> bool:
    return isinstance(expr, Constant)


def static_shape(expr: relax.Expr) -> list[int] | None:
    """The tensor's shape as ints, or None when it is not a tensor of static shape."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    shape = ty.shape
    if not isinstance(shape, relax.ShapeExpr):
        return None
    dims = []
    for dim in shape.values:
        if not isinstance(dim, tvm.tirx.IntImm):
            return None
        dims.append(int(dim.value))
    return dims


def shape_dims(expr: relax.Expr) -> list[int | tvm.tirx.PrimExpr] | None:
    """The tensor's shape, one entry per dim: an int when static, else the TIR expression
    (a ``tirx.Var`` such as ``n``, or an expression such as ``n * 2``); None when it is not
    a tensor whose shape is known (unknown rank, or a shape held in a variable)."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    return [int(d.value) if isinstance(d, tvm.tirx.IntImm) else d for d in ty.shape.values]


def is_symbolic(dim) -> bool:
    return not isinstance(dim, int)


def symbolic_dims(dims: list | None) -> list:
    """The symbolic dims of ``dims`` (TIR variables or expressions), in order."""
    return [d for d in dims or [] if is_symbolic(d)]


def dim_text(dim) -> str:
    """A dim as a reader writes it: ``n * 2``, not ``n * T.int64(2)``."""
    return re.sub(r"T\.u?int\d+\((-?\d+)\)", r"\1", str(dim))


def why_not_plain_dims(dims: list | None) -> str | None:
    """Why a shape cannot go to a oneDNN region (unknown, or a dim that is an expression)."""
    if dims is None:
        return "the tensor's shape is unknown (oneDNN regions need a known rank and dims)"
    for dim in dims:
        if is_symbolic(dim) and not isinstance(dim, tvm.tirx.Var):
            return (
                f"dimension {dim_text(dim)} is an expression, "
                "oneDNN regions take plain symbolic variables"
            )
    return None


def same_dim(a, b) -> bool:
    """Whether two dims are provably equal (ints, or the same symbolic expression)."""
    if not is_symbolic(a) and not is_symbolic(b):
        return a == b
    return bool(Analyzer().can_prove_equal(a, b))


def same_dims(a: list | None, b: list | None) -> bool:
    """Whether two shapes are provably equal, dim by dim."""
    return a is not None and b is not None and len(a) == len(b) and all(map(same_dim, a, b))


def dtype(expr: relax.Expr) -> str | None:
    ty = expr.ty
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def num_elements(shape: list[int] | None) -> int:
    return int(np.prod(shape)) if shape is not None else -1


def constant_array(expr: relax.Expr) -> np.ndarray:
    return expr.value.numpy()


def scalar_value(expr: relax.Expr) -> float | None:
    """The value of a one-element constant, or None."""
    if not is_constant(expr):
        return None
    arr = constant_array(expr)
    return float(arr.reshape(-1)[0]) if arr.size == 1 else None


def prim_value(expr) -> float | None:
    """The number held by an IntImm / FloatImm argument (e.g. clip bounds), or None."""
    if isinstance(expr, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
        return float(expr.value)
    return None


def extract_annotations(
    func: relax.Function, pattern, annotations: dict
) -> dict[str, relax.Expr] | None:
    """Match ``pattern`` against the output of ``func`` (a composite function) and return
    the expression each named sub-pattern matched, or None when it does not match."""
    var2val = relax.analysis.get_var2val(func)
    out = func.body.body
    matched = pattern.extract_matched_expr(var2val.get(out, out), var2val)
    if matched is None:
        return None
    return {name: matched[p] for name, p in annotations.items() if p in matched}
