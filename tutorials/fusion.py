"""Operator fusion: MXNet's ResNet sample block, TVM's default pipeline vs the oneDNN one.

The block from MXNet's oneDNN fusion tutorial, 64 channels::

    x -> conv3x3 -> bn -> relu -> conv3x3 -> bn -> (+ x) -> relu

Built here as an ONNX graph with ``onnx.helper``. The ``"onednn"`` pipeline folds each
BatchNorm into its conv, then fuses conv + bias + relu and conv + bias + residual add +
relu into two oneDNN primitives (one region); TVM's ``"default"`` pipeline runs every op
as its own untuned TVM kernel.

    python tutorials/fusion.py           # 56x56 feature maps
    python tutorials/fusion.py --fast    # 14x14, for CI
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_onednn
from tvm_onednn.target import host_target_spec
from tvm_onednn.timing import median_seconds


def resnet_sample_block(channels: int = 64, size: int = 56, seed: int = 0) -> onnx.ModelProto:
    """conv-bn-relu, conv-bn, add, relu (MXNet's sample block) as an opset-17 ONNX model."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv_bn(x, i):
        fan_in = channels * 9
        w = rng.normal(0, np.sqrt(2 / fan_in), (channels, channels, 3, 3))
        nodes.append(helper.make_node(
            "Conv", [x, const(f"w{i}", w)], [f"conv{i}"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]
        ))  # fmt: skip
        bn = [const(f"gamma{i}", rng.uniform(0.5, 1.5, channels)),
              const(f"beta{i}", rng.normal(0, 0.1, channels)),
              const(f"mean{i}", rng.normal(0, 0.1, channels)),
              const(f"var{i}", rng.uniform(0.5, 1.5, channels))]  # fmt: skip
        nodes.append(helper.make_node("BatchNormalization", [f"conv{i}", *bn], [f"bn{i}"]))
        return f"bn{i}"

    y = conv_bn("data", 0)
    nodes.append(helper.make_node("Relu", [y], ["relu0"]))
    y = conv_bn("relu0", 1)
    nodes.append(helper.make_node("Add", [y, "data"], ["sum"]))
    nodes.append(helper.make_node("Relu", ["sum"], ["output"]))
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        nodes,
        "resnet_sample_block",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small feature maps (CI)")
    args = parser.parse_args()
    size = 14 if args.fast else 56

    mod = tvm_onednn.from_onnx(resnet_sample_block(size=size))
    print("What the oneDNN pipeline offloads:")
    print(tvm_onednn.offload_summary(mod))

    target = tvm.target.Target(host_target_spec())
    x = tvm.runtime.tensor(
        np.random.default_rng(1).standard_normal((1, 64, size, size)).astype("float32")
    )
    results = {}
    for pipeline in ("default", "onednn"):
        vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=pipeline), tvm.cpu())
        repeats = 3 if pipeline == "default" else 20
        seconds = median_seconds(lambda vm=vm: vm["main"](x), repeats=repeats, warmup=1)
        results[pipeline] = (seconds, vm["main"](x).numpy())
        print(f"{pipeline:>8} pipeline: {seconds * 1e3:9.3f} ms (median of {repeats})")
    (t_default, y_default), (t_onednn, y_onednn) = results["default"], results["onednn"]
    print(f"oneDNN fusion speedup over TVM's default pipeline: {t_default / t_onednn:.1f}x")
    print(f"max |difference| between the two: {np.abs(y_default - y_onednn).max():.2e}")


if __name__ == "__main__":
    main()
