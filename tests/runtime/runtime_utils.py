"""Helpers for the runtime tests: hand-built subgraph JSON + calling the module."""

from __future__ import annotations

import json

import numpy as np
import tvm

from tvm_onednn import _ffi_api

ACTIVATIONS = ["relu", "clip", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "hardswish",
               "leaky_relu"]
ACT_ATTRS = {"clip": {"clip_min": -0.5, "clip_max": 0.75}, "leaky_relu": {"alpha": 0.2}}


def composite(base, bias=False, add=False, act=None):
    name = "onednn." + base
    if bias:
        name += "_bias"
    if add:
        name += "_add"
    if act:
        name += "_" + act
    return name


class Subgraph:
    """Builds one region document; references are ["input"|"const"|"node", i] lists."""

    def __init__(self, symbol="onednn_0"):
        self.symbol = symbol
        self.inputs, self.constants, self.nodes, self.outputs = [], [], [], []
        self.const_values = []

    def input(self, shape, dtype="float32"):
        self.inputs.append({"shape": list(shape), "dtype": dtype})
        return ["input", len(self.inputs) - 1]

    def const(self, value):
        return self._add_const(np.ascontiguousarray(value, dtype="float32"))

    def _add_const(self, value):
        idx = len(self.constants)
        self.constants.append({"name": f"{self.symbol}_onednn_const_{idx}",
                               "shape": list(value.shape), "dtype": str(value.dtype)})
        self.const_values.append(value)
        return ["const", idx]

    def node(self, op, inputs, shape, dtype="float32", **attrs):
        self.nodes.append({"op": op, "inputs": [list(r) for r in inputs], "attrs": attrs,
                           "shape": list(shape), "dtype": dtype})
        return ["node", len(self.nodes) - 1]

    def output(self, *refs):
        self.outputs.extend(list(r) for r in refs)

    def doc(self):
        """Version 2 when some dim is symbolic (a string), as the codegen writes it."""
        shapes = [t["shape"] for t in self.inputs + self.nodes]
        symbolic = any(isinstance(d, str) for shape in shapes for d in shape)
        return {"format": "tvm_onednn.subgraph", "version": 2 if symbolic else 1,
                "symbol": self.symbol,
                "inputs": self.inputs, "constants": self.constants, "nodes": self.nodes,
                "outputs": self.outputs}

    def json(self):
        return json.dumps(self.doc())

    def build(self, init=True):
        mod = _ffi_api.create_module(self.json())
        if init:
            init_region(mod, self.symbol, self.const_values)
        return mod

    def info(self, ref):
        """The declaration of a referenced input, constant or node."""
        kind, idx = ref
        return {"input": self.inputs, "const": self.constants, "node": self.nodes}[kind][idx]

    def output_shapes(self):
        return [tuple(self.info(ref)["shape"]) for ref in self.outputs]


def init_region(mod, symbol, const_values):
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(v)) for v in const_values]
    assert mod["__init_" + symbol](tensors) == 0


def run(mod, symbol, inputs, output_shapes):
    """Call the region; returns numpy outputs."""
    args = [tvm.runtime.tensor(np.ascontiguousarray(x, dtype="float32")) for x in inputs]
    outs = [tvm.runtime.tensor(np.full(s, np.nan, dtype="float32")) for s in output_shapes]
    mod[symbol](*args, *outs)
    return [o.numpy() for o in outs]


def run_graph(sg: Subgraph, inputs, mod=None):
    mod = mod if mod is not None else sg.build()
    return run(mod, sg.symbol, inputs, sg.output_shapes())


def kernel_info(mod):
    return json.loads(mod["get_kernel_info"]())


def stats(mod):
    return json.loads(mod["get_stats"]())


def rand(*shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed + 7919 * len(shape) + sum(shape))
    return (rng.standard_normal(shape) * scale).astype("float32")


def assert_close(actual, expected, rtol=1e-4, atol=1e-4):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64), rtol=rtol,
                               atol=atol)
