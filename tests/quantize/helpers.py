"""Test helpers: op lists, region JSON as RunCodegen would write it, a numpy int8 executor."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import tvm
from tvm import relax

from tvm_onednn.byoc.codegen import region_to_json
from tvm_onednn.byoc.partition import partition_for_onednn
from tvm_onednn.calib import CalibrationCollector

from ..runtime import numpy_ref


def main_ops(mod: tvm.IRModule) -> list[str]:
    """Op names of ``main``'s bindings in order, without the ``relax.`` prefix."""
    ops = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                ops.append(value.op.name.removeprefix("relax."))
    return ops


def main_calls(mod: tvm.IRModule, op: str) -> list[relax.Call]:
    """Calls of ``relax.<op>`` in ``main``, in binding order."""
    calls = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", None) == f"relax.{op}":
                calls.append(value)
    return calls


def const(expr: relax.Expr) -> np.ndarray:
    return expr.value.numpy()


def assert_int8_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Two executions of the same int8 graph: equal but for rare rounding flips.

    A value within float rounding of a .5 boundary may round to the neighbouring int8 step
    in one execution and not the other; a flip moves a few outputs (the ones that read
    the flipped value: a neighbourhood, or a row after a global pool) by about one step of
    the output's int8 range (``max|y| / 127``). Systematic differences (a wrong scale, a
    saturating kernel) move most outputs.
    """
    actual = actual.reshape(expected.shape)
    diff = np.abs(actual - expected)
    step = np.abs(expected).max() / 127
    assert diff.max() <= 2 * step, f"max difference {diff.max()} > 2 steps of {step}"
    differ = int(np.count_nonzero(diff > 1e-4))
    assert differ <= max(0.05 * diff.size, 8), f"{differ} of {diff.size} outputs differ"


class FixedRanges(CalibrationCollector):
    """Returns preset ranges (or whatever it is given, for the error tests)."""

    def __init__(self, ranges, include_layers=None):
        super().__init__(include_layers)
        self.ranges = ranges
        self.seen: dict[str, str] = {}  # name -> op_name
        self.calls: Counter = Counter()  # name -> collect() calls

    def collect(self, name, op_name, arr):
        self.seen[name] = op_name
        self.calls[name] += 1

    def post_collect(self):
        return self.ranges


class Region:
    """One oneDNN region: its JSON document and constant values."""

    def __init__(self, func: relax.Function, symbol: str):
        constants: list = []

        def visit(expr):
            is_tensor = isinstance(expr, tvm.ir.expr.Constant) and hasattr(expr.value, "numpy")
            if is_tensor and not any(expr.same_as(c) for c in constants):
                constants.append(expr)

        relax.analysis.post_order_visit(func, visit)
        names = {c: f"{symbol}_onednn_const_{i}" for i, c in enumerate(constants)}
        self.doc = json.loads(region_to_json(func, names))
        by_name = {name: const(c) for c, name in names.items()}
        self.const_values = [by_name[c["name"]] for c in self.doc["constants"]]

    @property
    def nodes(self) -> list[dict]:
        return self.doc["nodes"]

    def ops(self) -> list[str]:
        return [n["op"] for n in self.nodes]


def regions(qmod: tvm.IRModule) -> list[Region]:
    """The regions ``partition_for_onednn`` makes of ``qmod``, in call order."""
    part = partition_for_onednn(qmod)
    symbols = sorted(
        gv.name_hint
        for gv, f in part.functions.items()
        if f.attrs is not None and f.attrs.get("Codegen") == "onednn"
    )
    return [Region(part[s], s) for s in symbols]


# ----------------------------------------------------------------------------------------
# A numpy executor of int8 nodes, written from docs/subgraph-format.md ("int8 nodes").

_LIMITS = {"int8": (-128, 127), "uint8": (0, 255)}


def _real(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float64) - zero_point) * scale


def _saturate(y: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    lo, hi = _LIMITS[dtype]
    return np.clip(np.round(y / scale) + zero_point, lo, hi).astype(dtype)


def _chain(node: dict, operands: list, name: str) -> np.ndarray:
    quant, attrs = node["quant"], node["attrs"]
    src = _real(operands[0], quant["src_scale"], quant["src_zero_point"])
    w_q = operands[1].astype(np.float64)
    scales = np.asarray(quant["weight_scales"], dtype=np.float64)
    if name.startswith("conv2d"):
        weight = w_q * scales.reshape(-1, 1, 1, 1)
        y = numpy_ref.conv2d(
            src,
            weight,
            None,
            attrs["strides"],
            attrs["padding"],
            attrs["dilation"],
            attrs["groups"],
        )
    else:
        y = src @ (w_q * scales.reshape(1, -1))
    rest = operands[2:]
    parts = name.split("_")[1:]
    if "bias" in parts:
        y = y + rest.pop(0)
    if "add" in parts:
        residual = rest.pop(0)
        if "residual_scale" in quant:
            residual = _real(residual, quant["residual_scale"], quant["residual_zero_point"])
        y = y + residual
    activation = "_".join(p for p in parts if p not in ("bias", "add")) or None
    y = numpy_ref.activation(
        y,
        activation,
        attrs.get("clip_min", 0.0),
        attrs.get("clip_max", 6.0),
        attrs.get("alpha", 0.1),
    )
    return y


def run_int8_region(region: Region, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Execute a region document node by node with numpy (float64 math, int8 storage)."""
    values: list[np.ndarray] = []

    def fetch(ref):
        kind, index = ref
        return {"input": inputs, "const": region.const_values, "node": values}[kind][index]

    for node in region.nodes:
        op, quant, dtype = node["op"], node.get("quant", {}), node["dtype"]
        operands = [fetch(r) for r in node["inputs"]]
        name = op.removeprefix("onednn.")
        if name == "quantize":
            y = operands[0].astype(np.float64)
        elif name == "dequantize":
            y = _real(operands[0], quant["src_scale"], quant["src_zero_point"])
        elif re.fullmatch(r"q(max|avg)_pool2d", name):
            src = _real(operands[0], quant["src_scale"], quant["src_zero_point"])
            a = node["attrs"]
            y = numpy_ref.pool2d(
                src,
                name[1:4],
                a["pool_size"],
                a["strides"],
                a["padding"],
                a["dilation"],
                a["ceil_mode"],
                a.get("count_include_pad", False),
            )
        elif name == "qglobal_avg_pool2d":
            y = numpy_ref.global_avg_pool2d(
                _real(operands[0], quant["src_scale"], quant["src_zero_point"])
            )
        elif name.startswith("q"):
            y = _chain(node, operands, name[1:])
        elif name == "reshape":  # float32 (e.g. pool -> dense), static shapes here
            y = operands[0].astype(np.float64).reshape(node["shape"])
        else:
            raise NotImplementedError(op)
        if dtype == "float32":
            values.append(y.astype(np.float32))
        else:
            values.append(_saturate(y, quant["dst_scale"], quant["dst_zero_point"], dtype))
        assert list(values[-1].shape) == node["shape"], (op, values[-1].shape, node["shape"])
    return [fetch(r) for r in region.doc["outputs"]]
