"""What one oneDNN primitive fuses, and the dataflow patterns that find it.

A *chain* is ``base op -> [+ bias] -> [+ residual] -> [activation]``: one conv2d or matmul
primitive with post-ops. :class:`ChainSpec` names it (the name is the runtime's dispatch
key, ``docs/subgraph-format.md``); the builders here return a pattern together with its
named sub-patterns (``root``, ``lhs``, ``bias``, ``residual``, ``activation``, ...), which
the checks and the codegen read. The float32 and int8 tables are both built from them.
Nothing here keeps state between calls.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tvm.relax.dpl.pattern import DFPattern, is_const, is_op, wildcard

BACKEND = "onednn"
#: Composite function attribute: a float32 matmul node's ``fpmath`` (``"bf16"``), set by
#: ``partition.mark_float_matmul_math`` and written by the codegen.
FPMATH_ATTR = "onednn.fpmath"

#: A pattern and its named sub-patterns.
Pattern = tuple[DFPattern, dict[str, DFPattern]]


# ----------------------------------------------------------------------------------------
# Activations: each builder applies the activation to ``x`` and names its parts.


def _unary(op: str) -> Callable[[DFPattern], Pattern]:
    def build(x: DFPattern) -> Pattern:
        return is_op(op)(x), {}

    return build


def _clip(x: DFPattern) -> Pattern:
    return is_op("relax.clip")(x, wildcard(), wildcard()), {}


def _silu(x: DFPattern) -> Pattern:
    sigmoid = is_op("relax.sigmoid")(x)
    out = (
        is_op("relax.nn.silu")(x)
        | is_op("relax.multiply")(x, sigmoid)
        | is_op("relax.multiply")(sigmoid, x)
    )
    return out, {}


def _hardswish(x: DFPattern) -> Pattern:
    # ONNX HardSwish imports as x * clip(x + 3, 0, 6) / 6; the check reads the constants.
    shifted = is_op("relax.add")(x, is_const())
    clipped = is_op("relax.clip")(shifted, wildcard(), wildcard())
    divided = is_op("relax.divide")(clipped, is_const())
    out = is_op("relax.multiply")(x, divided)
    return out, {"hs_shift": shifted, "hs_clip": clipped, "hs_divide": divided}


ACTIVATIONS: Mapping[str, Callable[[DFPattern], Pattern]] = MappingProxyType(
    {
        "relu": _unary("relax.nn.relu"),
        "clip": _clip,
        "sigmoid": _unary("relax.sigmoid"),
        "tanh": _unary("relax.tanh"),
        "gelu": _unary("relax.nn.gelu"),
        "gelu_tanh": _unary("relax.nn.gelu_tanh"),
        "silu": _silu,
        "hardswish": _hardswish,
        "leaky_relu": _unary("relax.nn.leakyrelu"),
    }
)

POOLS = ("max_pool2d", "avg_pool2d", "global_avg_pool2d")

BASE_OPS = {"conv2d": "relax.nn.conv2d", "matmul": "relax.matmul"}


@dataclass(frozen=True)
class ChainSpec:
    """What a conv2d/matmul composite fuses; its ``name`` is the dispatch key."""

    base: str
    bias: bool
    add: bool
    activation: str | None

    @property
    def name(self) -> str:
        parts = [f"{BACKEND}.{self.base}"]
        if self.bias:
            parts.append("bias")
        if self.add:
            parts.append("add")
        if self.activation:
            parts.append(self.activation)
        return "_".join(parts)

    @property
    def length(self) -> int:
        return 1 + self.bias + self.add + (self.activation is not None)


@functools.cache
def chain_specs() -> tuple[ChainSpec, ...]:
    """Every conv2d/matmul chain the runtime runs, longest chains first."""
    specs = [
        ChainSpec(base, bias, add, act)
        for base in BASE_OPS
        for bias, add in itertools.product((True, False), repeat=2)
        for act in (*ACTIVATIONS, None)
    ]
    return tuple(sorted(specs, key=lambda s: -s.length))


@functools.cache
def chain_spec_by_name() -> Mapping[str, ChainSpec]:
    """Float32 composite name -> its chain (the one map codegen and tables share)."""
    return MappingProxyType({spec.name: spec for spec in chain_specs()})


def pool_name(kind: str) -> str:
    return f"{BACKEND}.{kind}"


# ----------------------------------------------------------------------------------------
# Pattern builders.


def epilogue_pattern(
    spec: ChainSpec,
    out: DFPattern,
    annotations: dict[str, DFPattern],
    residual: DFPattern,
    residual_first: bool | None = None,
) -> DFPattern:
    """Append the chain's bias, residual add and activation to ``out`` (the base op).

    ``residual`` is the residual operand's pattern; ``residual_first`` fixes its side of
    the add (True: ``add(residual, out)``, False: ``add(out, residual)``, None: either).
    Both sides are separate table entries where it matters: with an alternative inside one
    pattern, a match the check rejects is not retried with the other operand order.
    Annotations are added to ``annotations``; the returned pattern is the chain's output.
    """
    if spec.bias:
        bias = is_const()
        out = is_op("relax.add")(out, bias) | is_op("relax.add")(bias, out)
        annotations.update(bias=bias, bias_add=out)
    if spec.add:
        first = is_op("relax.add")(residual, out)
        second = is_op("relax.add")(out, residual)
        sides = {True: first, False: second, None: first | second}
        out = sides[residual_first]
        annotations.update(residual=residual, residual_add=out)
    if spec.activation:
        out, parts = ACTIVATIONS[spec.activation](out)
        annotations.update(parts, activation=out)
    return out


def chain_pattern(
    spec: ChainSpec, residual_first: bool | None = None, scaled: bool = False
) -> Pattern:
    """The float32 dataflow pattern of one chain, with its named sub-patterns.

    ``scaled`` (matmul only): the product may be multiplied by a constant right away
    (``matmul(a, b) * c``, annotated ``scale`` and ``scaled``), which the runtime applies
    as the matmul's ``output_scale``; the check requires ``c`` to be one scalar.
    """
    lhs, rhs = wildcard(), wildcard()
    root = is_op(BASE_OPS[spec.base])(lhs, rhs)
    annotations = {"lhs": lhs, "rhs": rhs, "root": root}
    out = root
    if scaled and spec.base == "matmul":
        scale = is_const()
        scaled_root = is_op("relax.multiply")(root, scale)
        out = root | scaled_root
        annotations.update(scale=scale, scaled=scaled_root)
    out = epilogue_pattern(spec, out, annotations, wildcard(), residual_first)
    return out, annotations


def pool_root(kind: str, data: DFPattern) -> DFPattern:
    """The pooling op of ``kind`` on ``data`` (a global average pool has two forms)."""
    if kind == "global_avg_pool2d":
        return is_op("relax.mean")(data) | is_op("relax.nn.adaptive_avg_pool2d")(data)
    return is_op(f"relax.nn.{kind}")(data)


def pool_pattern(kind: str) -> Pattern:
    data = wildcard()
    root = pool_root(kind, data)
    return root, {"lhs": data, "root": root}
