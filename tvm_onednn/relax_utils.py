"""Small helpers for reading Relax expressions (shapes, dtypes, constants)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant


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
