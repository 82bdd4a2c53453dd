"""JSON node writers of the transformer ops (``docs/subgraph-format.md``): layer_norm,
softmax, standalone activations, broadcasting binary ops, reshape and transpose."""

from __future__ import annotations

from typing import Any

from .. import relax_utils as ru
from .tpatterns import (
    LAYER_NORM,
    RESHAPE,
    SOFTMAX,
    TRANSPOSE,
    transformer_annotations,
    transformer_composite_names,
)
from .writers import CodegenError, CompositeCall, activation_attrs, node, register_writer


def _annotations(site: CompositeCall) -> dict[str, Any]:
    annotated = transformer_annotations(site.func)
    if annotated is None:
        raise CodegenError(f"composite {site.name} does not match its own pattern")
    return annotated


def _rank(expr) -> int:
    dims = ru.shape_dims(expr)
    if dims is None:
        raise CodegenError(f"a tensor of unknown rank: {expr.ty}")
    return len(dims)


@register_writer([LAYER_NORM])
def write_layer_norm(site: CompositeCall) -> dict[str, Any]:
    ann = _annotations(site)
    operand = site.operand_resolver()
    inputs = [operand(ann["data"]), operand(ann["gamma"]), operand(ann["beta"])]
    return node(site, inputs, {"epsilon": float(ann["root"].attrs.epsilon)})


@register_writer([SOFTMAX])
def write_softmax(site: CompositeCall) -> dict[str, Any]:
    ann = _annotations(site)
    root = ann["root"]
    attrs = {"axis": int(root.attrs.axis) % _rank(root), "nan_to_zero": "guard" in ann}
    return node(site, [site.operand_resolver()(ann["data"])], attrs)


@register_writer([RESHAPE])
def write_reshape(site: CompositeCall) -> dict[str, Any]:
    return node(site, [site.operand_resolver()(_annotations(site)["data"])], {})


@register_writer([TRANSPOSE])
def write_transpose(site: CompositeCall) -> dict[str, Any]:
    root = _annotations(site)["root"]
    rank = _rank(root)
    axes = root.attrs.axes
    perm = [int(a) % rank for a in axes] if axes is not None else list(reversed(range(rank)))
    return node(site, [site.operand_resolver()(root.args[0])], {"axes": perm})


_ELEMENTWISE = [
    n for n in transformer_composite_names() if n not in (LAYER_NORM, SOFTMAX, RESHAPE, TRANSPOSE)
]


@register_writer(_ELEMENTWISE)
def write_elementwise(site: CompositeCall) -> dict[str, Any]:
    """A binary op ``[a, b]`` with an optional activation, or a standalone activation."""
    ann = _annotations(site)
    operand = site.operand_resolver()
    if "lhs" in ann:
        inputs = [operand(ann["lhs"]), operand(ann["rhs"])]
        activation = site.name.split(".", 1)[1].partition("_")[2] or None
    else:
        inputs = [operand(ann["data"])]
        activation = site.name.split(".", 1)[1]
    return node(site, inputs, activation_attrs(activation, ann.get("activation")))
