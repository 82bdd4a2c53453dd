"""Small float32 models for the quantizer tests, with their weights kept for hand computation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..runtime import numpy_ref


def _normal(rng, shape, scale) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype("float32")


@dataclass
class Model:
    """A module and its named float32 constants (``weights[name]``)."""

    mod: tvm.IRModule
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()

    def batches(self, count: int, seed: int = 1) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(self.input_shape).astype("float32") for _ in range(count)]


def _conv(w: np.ndarray, x: relax.Expr) -> relax.Expr:
    pad = w.shape[2] // 2
    return relax.op.nn.conv2d(x, relax.const(w), padding=(pad, pad, pad, pad))


def residual_block(channels: int = 8, size: int = 8, seed: int = 0) -> Model:
    """``relu(conv1(relu(conv0(x) + b0)) + b1 + x)``: ResNet's basic block, NCHW."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(channels * 9)
    weights = {
        "w0": _normal(rng, (channels, channels, 3, 3), scale),
        "b0": _normal(rng, (1, channels, 1, 1), 0.1),
        "w1": _normal(rng, (channels, channels, 3, 3), scale),
        "b1": _normal(rng, (1, channels, 1, 1), 0.1),
    }
    shape = (1, channels, size, size)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(_conv(weights["w0"], x))
            y = bb.emit(relax.op.add(y, relax.const(weights["b0"])))
            y = bb.emit(relax.op.nn.relu(y))
            z = bb.emit(_conv(weights["w1"], y))
            z = bb.emit(relax.op.add(z, relax.const(weights["b1"])))
            z = bb.emit(relax.op.add(z, x))
            gv = bb.emit_output(relax.op.nn.relu(z))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), weights, shape)


def residual_block_reference(model: Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """The block's float32 tensors, computed with numpy: input, conv0 output, output."""
    w = model.weights
    y = np.maximum(numpy_ref.conv2d(x, w["w0"], padding=(1, 1, 1, 1)) + w["b0"], 0)
    z = numpy_ref.conv2d(y, w["w1"], padding=(1, 1, 1, 1)) + w["b1"] + x
    return {"x": x, "y": y.astype("float32"), "out": np.maximum(z, 0).astype("float32")}


def single_conv(channels: int = 8, size: int = 8, seed: int = 0) -> Model:
    """``relu(conv(x) + b)``: one chain, whose output is the model's output."""
    rng = np.random.default_rng(seed)
    weights = {
        "w": _normal(rng, (channels, 4, 3, 3), 0.3),
        "b": _normal(rng, (1, channels, 1, 1), 0.1),
    }
    shape = (1, 4, size, size)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(_conv(weights["w"], x))
            y = bb.emit(relax.op.add(y, relax.const(weights["b"])))
            gv = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), weights, shape)


def conv_pool_net(channels: int = 8, size: int = 8, seed: int = 0) -> Model:
    """conv-relu -> max pool -> conv-relu -> avg pool -> conv-bias (+ pooled residual)-relu ->
    global avg pool -> reshape: one oneDNN region (all but the reshape), all pools int8."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(channels * 9)
    weights = {
        "w0": _normal(rng, (channels, 3, 3, 3), 0.3),
        "w1": _normal(rng, (channels, channels, 3, 3), scale),
        "w2": _normal(rng, (channels, channels, 3, 3), scale),
        "b2": _normal(rng, (1, channels, 1, 1), 0.1),
    }
    shape = (2, 3, size, size)
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(bb.emit(_conv(weights["w0"], x))))
            p = bb.emit(relax.op.nn.max_pool2d(y, pool_size=(2, 2), strides=(2, 2)))
            z = bb.emit(relax.op.nn.relu(bb.emit(_conv(weights["w1"], p))))
            a = bb.emit(relax.op.nn.avg_pool2d(z, pool_size=(3, 3), padding=(1, 1, 1, 1)))
            o = bb.emit(_conv(weights["w2"], a))
            o = bb.emit(relax.op.add(o, relax.const(weights["b2"])))
            o = bb.emit(relax.op.add(o, p))
            o = bb.emit(relax.op.nn.relu(o))
            g = bb.emit(relax.op.mean(o, axis=[2, 3], keepdims=True))
            gv = bb.emit_output(relax.op.reshape(g, [shape[0], channels]))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), weights, shape)


def small_cnn(channels: int = 8, size: int = 8, classes: int = 5, seed: int = 0) -> Model:
    """conv-relu -> max pool -> residual block -> global avg pool -> reshape -> matmul-bias."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(channels * 9)
    weights = {
        "w0": _normal(rng, (channels, 3, 3, 3), 0.3),
        "b0": _normal(rng, (1, channels, 1, 1), 0.1),
        "w1": _normal(rng, (channels, channels, 3, 3), scale),
        "b1": _normal(rng, (1, channels, 1, 1), 0.1),
        "w2": _normal(rng, (channels, channels, 3, 3), scale),
        "b2": _normal(rng, (1, channels, 1, 1), 0.1),
        "fc": _normal(rng, (channels, classes), 1.0 / np.sqrt(channels)),
        "fc_b": _normal(rng, (classes,), 0.1),
    }
    shape = (2, 3, size, size)
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(_conv(weights["w0"], x))
            y = bb.emit(relax.op.add(y, relax.const(weights["b0"])))
            y = bb.emit(relax.op.nn.relu(y))
            p = bb.emit(relax.op.nn.max_pool2d(y, pool_size=(2, 2), strides=(2, 2)))
            z = bb.emit(_conv(weights["w1"], p))
            z = bb.emit(relax.op.add(z, relax.const(weights["b1"])))
            z = bb.emit(relax.op.nn.relu(z))
            z = bb.emit(_conv(weights["w2"], z))
            z = bb.emit(relax.op.add(z, relax.const(weights["b2"])))
            z = bb.emit(relax.op.add(z, p))
            z = bb.emit(relax.op.nn.relu(z))
            g = bb.emit(relax.op.mean(z, axis=[2, 3], keepdims=True))
            f = bb.emit(relax.op.reshape(g, [shape[0], channels]))
            o = bb.emit(relax.op.matmul(f, relax.const(weights["fc"])))
            gv = bb.emit_output(relax.op.add(o, relax.const(weights["fc_b"])))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), weights, shape)


def mlp(features: int = 16, hidden: int = 32, classes: int = 4, seed: int = 0) -> Model:
    """matmul-bias-relu -> matmul-bias (+ its input) -gelu -> matmul (no bias)."""
    rng = np.random.default_rng(seed)
    weights = {
        "w0": _normal(rng, (features, hidden), 1.0 / np.sqrt(features)),
        "b0": _normal(rng, (hidden,), 0.1),
        "w1": _normal(rng, (hidden, hidden), 1.0 / np.sqrt(hidden)),
        "b1": _normal(rng, (hidden,), 0.1),
        "w2": _normal(rng, (hidden, classes), 1.0 / np.sqrt(hidden)),
    }
    shape = (4, features)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(weights["w0"])))
            h = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(h, relax.const(weights["b0"])))))
            g = bb.emit(relax.op.matmul(h, relax.const(weights["w1"])))
            g = bb.emit(relax.op.add(g, relax.const(weights["b1"])))
            g = bb.emit(relax.op.add(g, h))
            g = bb.emit(relax.op.nn.gelu(g))
            gv = bb.emit_output(relax.op.matmul(g, relax.const(weights["w2"])))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), weights, shape)


def nhwc_conv(size: int = 8, seed: int = 0) -> Model:
    """An NHWC/HWIO conv-relu, which the oneDNN runtime does not take."""
    rng = np.random.default_rng(seed)
    weights = {"w": _normal(rng, (3, 3, 4, 8), 0.3)}
    shape = (1, size, size, 4)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.nn.conv2d(
                    x,
                    relax.const(weights["w"]),
                    padding=1,
                    data_layout="NHWC",
                    kernel_layout="HWIO",
                )
            )
            gv = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), weights, shape)
