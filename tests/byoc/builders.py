"""Small Relax modules exercising one pattern each, built with the BlockBuilder."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

RNG = np.random.default_rng(1)

ACTIVATION_BUILDERS = {
    "relu": lambda x: relax.op.nn.relu(x),
    "clip": lambda x: relax.op.clip(x, -0.5, 0.75),
    "sigmoid": lambda x: relax.op.sigmoid(x),
    "tanh": lambda x: relax.op.tanh(x),
    "gelu": lambda x: relax.op.nn.gelu(x),
    "gelu_tanh": lambda x: relax.op.nn.gelu_tanh(x),
    "silu": lambda x: relax.op.nn.silu(x),
    "leaky_relu": lambda x: relax.op.nn.leakyrelu(x, 0.1),
}


def _const(shape, scale=0.5, rng=RNG) -> relax.Expr:
    return relax.const((rng.standard_normal(shape) * scale).astype("float32"))


def dataflow_function(params, body) -> tvm.IRModule:
    """``main(*params)`` whose dataflow block is ``body(bb, *params)``."""
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            gv = bb.emit_output(body(bb, *params))
        bb.emit_func_output(gv)
    return bb.finalize()


def _hardswish(bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
    shifted = bb.emit(relax.op.add(x, relax.const(3.0, "float32")))
    clipped = bb.emit(relax.op.clip(shifted, 0, 6))
    return relax.op.multiply(x, bb.emit(relax.op.divide(clipped, relax.const(6.0, "float32"))))


def _epilogue(bb, out, out_shape, channel_axis, bias, add, activation, residual):
    if bias:
        bias_shape = [1] * len(out_shape)
        bias_shape[channel_axis] = out_shape[channel_axis]
        out = bb.emit(relax.op.add(out, _const(bias_shape)))
    if add:
        out = bb.emit(relax.op.add(out, residual))
    if activation == "hardswish":
        out = bb.emit(_hardswish(bb, out))
    elif activation:
        out = bb.emit(ACTIVATION_BUILDERS[activation](out))
    return out


def conv2d_module(
    data_shape=(1, 16, 12, 12),
    out_channels=16,
    kernel=(3, 3),
    strides=(1, 1),
    padding=(1, 1, 1, 1),
    dilation=(1, 1),
    groups=1,
    bias=True,
    add=False,
    activation="relu",
) -> tuple[tvm.IRModule, list[np.ndarray]]:
    """conv2d [+ bias] [+ residual input] [+ activation]; residual is a second input."""
    n, c, h, w = data_shape
    weight = _const((out_channels, c // groups, *kernel), scale=1.0 / np.sqrt(c * kernel[0]))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(data_shape), "float32"))
    oh = (h + padding[0] + padding[2] - dilation[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (w + padding[1] + padding[3] - dilation[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    out_shape = [n, out_channels, oh, ow]
    params = [x]
    residual = None
    if add:
        residual = relax.Var("r", relax.TensorType(out_shape, "float32"))
        params.append(residual)
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit(
                relax.op.nn.conv2d(
                    x, weight, strides=strides, padding=padding, dilation=dilation, groups=groups
                )
            )
            out = _epilogue(bb, out, out_shape, 1, bias, add, activation, residual)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    inputs = [RNG.standard_normal(data_shape).astype("float32")]
    if add:
        inputs.append(RNG.standard_normal(out_shape).astype("float32"))
    return bb.finalize(), inputs


def matmul_module(
    a_shape=(8, 32),
    b_shape=(32, 16),
    const_b=True,
    bias=True,
    add=False,
    activation="relu",
) -> tuple[tvm.IRModule, list[np.ndarray]]:
    """matmul [+ bias] [+ residual input] [+ activation]; b a constant or a second input."""
    out_shape = [*a_shape[:-1], b_shape[-1]]
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(list(a_shape), "float32"))
    params = [a]
    inputs = [RNG.standard_normal(a_shape).astype("float32")]
    if const_b:
        b = _const(b_shape, scale=1.0 / np.sqrt(a_shape[-1]))
    else:
        b = relax.Var("b", relax.TensorType(list(b_shape), "float32"))
        params.append(b)
        inputs.append((RNG.standard_normal(b_shape) / np.sqrt(a_shape[-1])).astype("float32"))
    residual = None
    if add:
        residual = relax.Var("r", relax.TensorType(out_shape, "float32"))
        params.append(residual)
        inputs.append(RNG.standard_normal(out_shape).astype("float32"))
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit(relax.op.matmul(a, b))
            out = _epilogue(bb, out, out_shape, len(out_shape) - 1, bias, add, activation, residual)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.finalize(), inputs


def pool_module(kind: str, data_shape=(1, 8, 13, 13), **attrs) -> tuple[tvm.IRModule, list]:
    """One pooling op: max_pool2d / avg_pool2d (attrs passed on), mean, adaptive avg."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(data_shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            if kind == "mean":
                out = relax.op.mean(x, axis=[2, 3], keepdims=True)
            elif kind == "adaptive":
                out = relax.op.nn.adaptive_avg_pool2d(x, output_size=[1, 1])
            else:
                out = getattr(relax.op.nn, kind)(x, **attrs)
            gv = bb.emit_output(bb.emit(out))
        bb.emit_func_output(gv)
    return bb.finalize(), [RNG.standard_normal(data_shape).astype("float32")]


def symbolic_convnet(
    channels: int = 8, size: int = 16, batch: int | None = None, seed: int = 0
) -> tvm.IRModule:
    """conv-bn-relu, conv + residual + relu, max pool, global pool, dense, on a batch
    ``n`` that is symbolic (or ``batch``): input ``[n, 3, size, size]``, output ``[n, 10]``.
    The weights are drawn from ``seed``."""
    n = tvm.tirx.Var("n", "int64") if batch is None else batch
    c = channels
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([n, 3, size, size], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, _const((c, 3, 3, 3), 0.3, rng), padding=1))
            gamma = relax.const(rng.uniform(0.5, 1.5, c).astype("float32"))
            beta, mean = _const((c,), 0.1, rng), _const((c,), 0.1, rng)
            var = relax.const(rng.uniform(0.5, 1.5, c).astype("float32"))
            y = bb.emit(relax.op.nn.batch_norm(y, gamma, beta, mean, var, axis=1, training=False))
            y = bb.emit(relax.op.nn.relu(bb.emit(relax.TupleGetItem(y, 0))))
            z = bb.emit(relax.op.nn.conv2d(y, _const((c, c, 3, 3), 0.2, rng), padding=1))
            z = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(z, y))))
            z = bb.emit(relax.op.nn.max_pool2d(z, pool_size=2, strides=2))
            z = bb.emit(relax.op.mean(z, axis=[2, 3], keepdims=True))
            z = bb.emit(relax.op.reshape(z, [n, c]))
            z = bb.emit(relax.op.matmul(z, _const((c, 10), 0.5, rng)))
            z = bb.emit(relax.op.add(z, _const((10,), 0.5, rng)))
            gv = bb.emit_output(z)
        bb.emit_func_output(gv)
    return bb.finalize()


def symbolic_matmul_chain(
    activation: str = "gelu", k: int = 64, n_out: int = 32, seed: int = 0
) -> tvm.IRModule:
    """``[n, s, k] @ [k, n_out] + bias -> activation`` with a symbolic batch ``n`` and
    sequence length ``s``; the weights are drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n, s = tvm.tirx.Var("n", "int64"), tvm.tirx.Var("s", "int64")
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([n, s, k], "float32"))
    with bb.function("main", [a]):
        with bb.dataflow():
            out = bb.emit(relax.op.matmul(a, _const((k, n_out), 1.0 / np.sqrt(k), rng)))
            bias = relax.op.add(out, _const((n_out,), 0.5, rng))
            out = bb.emit(ACTIVATION_BUILDERS[activation](bb.emit(bias)))
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.finalize()
