"""Importing ONNX models into Relax with the static shapes oneDNN regions need."""

from __future__ import annotations

import os

import onnx
import tvm
from tvm.relax.frontend.onnx import from_onnx as _relax_from_onnx


class ModelImportError(ValueError):
    """The model cannot be imported (missing file, unknown input, dynamic shape...)."""


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """The graph inputs (initializers excluded) with their declared dims."""
    initializers = {init.name for init in model.graph.initializer}
    shapes = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
    return shapes


def from_onnx(
    model: onnx.ModelProto | str | os.PathLike,
    shape_dict: dict[str, list[int]] | None = None,
) -> tvm.IRModule:
    """Import an ONNX model (object or path) as a Relax module with static input shapes.

    ``shape_dict`` overrides input shapes (e.g. a batch size); every input must end up
    fully static, otherwise a ``ModelImportError`` names the input and its dims.
    """
    if not isinstance(model, onnx.ModelProto):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelImportError(f"no ONNX model at {path!r}")
        try:
            model = onnx.load(path)
        except Exception as err:  # onnx raises DecodeError and friends
            raise ModelImportError(f"{path!r} is not a readable ONNX model: {err}") from err
    declared = input_shapes(model)
    shape_dict = dict(shape_dict or {})
    unknown = sorted(set(shape_dict) - set(declared))
    if unknown:
        raise ModelImportError(f"unknown input name(s) {unknown}; the model has {sorted(declared)}")
    shapes = {}
    for name, dims in declared.items():
        dims = list(shape_dict.get(name, dims))
        if len(dims) != len(declared[name]):
            raise ModelImportError(
                f"input {name!r} has rank {len(declared[name])}, got shape {dims}"
            )
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise ModelImportError(
                f"input {name!r} has a non-static shape {dims}; pass shape_dict={{{name!r}: [...]}}"
            )
        shapes[name] = dims
    return _relax_from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
