"""Reference models shipped inside the ``onnx`` wheel (``onnx/backend/test/data/light``).

These "light" models keep the exact graph of the ONNX model zoo networks but replace weights
with ``ConstantOfShape`` nodes (constant weights), so the wheel stays small. Each comes with
one expected output (``light_<name>_output_0.pb``) for the deterministic input that the ONNX
backend test runner generates: ``arange(size).reshape(shape) / size`` in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["ZooModel", "light_models_dir", "light_model", "light_resnet50"]


@dataclass(frozen=True)
class ZooModel:
    """A model with one input set and the outputs it is expected to produce."""

    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    expected: list[np.ndarray]


def light_models_dir() -> Path:
    """The ``light`` test-model folder of the installed onnx package."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _runner_input(value: onnx.ValueInfoProto) -> np.ndarray:
    """The input onnx's backend test runner feeds light models (``random=False``)."""
    dims = value.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    size = int(np.prod(shape))
    return (np.arange(size).reshape(shape) / size).astype(np.float32)


def light_model(name: str) -> ZooModel:
    """Load ``light_<name>.onnx`` with its runner input and stored expected output(s)."""
    folder = light_models_dir()
    path = folder / f"light_{name}.onnx"
    if not path.is_file():
        available = sorted(p.stem.removeprefix("light_") for p in folder.glob("light_*.onnx"))
        raise FileNotFoundError(f"{path} not found; available: {available}")
    model = onnx.load(path)
    initializers = {init.name for init in model.graph.initializer}
    inputs = {
        value.name: _runner_input(value)
        for value in model.graph.input
        if value.name not in initializers
    }
    expected = []
    for i in range(len(model.graph.output)):
        tensor = onnx.TensorProto()
        tensor.ParseFromString((folder / f"light_{name}_output_{i}.pb").read_bytes())
        expected.append(numpy_helper.to_array(tensor))
    return ZooModel(model, inputs, expected)


def light_resnet50() -> ZooModel:
    """ResNet-50 (opset 9: 53 Conv, 53 BatchNormalization, 49 Relu, 16 Sum, Softmax head).

    Its input is ``gpu_0/data_0`` [1, 3, 224, 224]. The constant weights make every logit equal,
    so the expected softmax output is uniform (0.001): it checks the graph runs end to end with
    the right shapes, not numerics.
    """
    return light_model("resnet50")
