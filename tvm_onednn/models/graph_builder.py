"""A tiny helper for writing ONNX graphs node by node with ``onnx.helper``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    """Collects nodes and initializers; each ``op`` call returns its output name."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        candidate, i = name, 1
        while candidate in self._names:
            candidate, i = f"{name}_{i}", i + 1
        self._names.add(candidate)
        return candidate

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer and return its (unique) name."""
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        """Add a single-output node named ``name``; returns the output value name."""
        name = self._unique(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def model(
        self,
        inputs: Sequence[tuple[str, Sequence[int]]],
        outputs: Sequence[tuple[str, Sequence[int]]],
        graph_name: str,
    ) -> onnx.ModelProto:
        """Finish the graph as an opset-17 float32 model and validate it."""

        def info(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [info(n, s) for n, s in inputs],
            [info(n, s) for n, s in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="tvm_onednn.models",
        )
        # IR version 8 is what opset 17 shipped with; older runtimes reject newer IRs.
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model
