"""Bias correction (quantize(bias_correction=True)) and the float32 stem (float_stem=True)."""

import numpy as np
import pytest
from tvm import relax

from tvm_onednn.quantize import quantize
from tvm_onednn.quantize.bias_correction import ConvGeometry, bias_shift, tap_means
from tvm_onednn.quantize.weights import quantize_weight
from tvm_onednn.testing import Runner, build

from ..runtime import numpy_ref
from .models import Model, conv_pool_net, residual_block


def _ones_conv_means(x, geometry, channels):
    """Per-tap means by brute force: a conv with a one-hot weight picks one tap of one channel."""
    (kh, kw), out = geometry.kernel, np.empty((channels, *geometry.kernel))
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                w = np.zeros((1, channels, kh, kw))
                w[0, c, i, j] = 1
                y = numpy_ref.conv2d(x, w, strides=geometry.strides, padding=geometry.padding,
                                     dilation=geometry.dilation)  # fmt: skip
                out[c, i, j] = y.mean()
    return out


@pytest.mark.parametrize("strides,padding,dilation", [
    ((1, 1), (1, 1, 1, 1), (1, 1)), ((2, 2), (1, 0, 1, 1), (1, 1)), ((1, 2), (2, 2, 2, 2), (2, 2)),
])  # fmt: skip
def test_tap_means_match_a_brute_force_conv(strides, padding, dilation):
    x = np.random.default_rng(0).uniform(0, 2, (2, 3, 7, 6))
    geometry = ConvGeometry(strides, padding, dilation, (3, 3))
    sums, count = tap_means(x, geometry)
    np.testing.assert_allclose(sums / count, _ones_conv_means(x, geometry, 3), rtol=1e-12)


@pytest.mark.parametrize("groups", [1, 4])
def test_bias_shift_restores_the_output_mean(groups):
    """mean(conv(x, w_q) + shift) == mean(conv(x, w)) per output channel (numpy), where the
    uncorrected mean error is far from zero (inputs with a positive mean)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 6, (4, 4, 9, 9))
    w = rng.standard_normal((8, 4 // groups, 3, 3)).astype(np.float32)
    w_q, scales = quantize_weight(w, 0)
    deq = w_q.astype(np.float32) * scales.reshape(-1, 1, 1, 1)
    geometry = ConvGeometry((2, 2), (1, 1, 1, 1), (1, 1), (3, 3))
    sums, count = tap_means(x, geometry)
    shift = bias_shift(w, deq, sums / count, "conv2d", groups)

    def mean(weight):
        y = numpy_ref.conv2d(x, weight, strides=(2, 2), padding=(1, 1, 1, 1), groups=groups)
        return y.mean(axis=(0, 2, 3))

    before = mean(deq) - mean(w)
    assert np.abs(before).max() > 1e-4
    np.testing.assert_allclose(mean(deq) + shift, mean(w), rtol=0, atol=1e-6)


def test_bias_shift_matmul():
    rng = np.random.default_rng(2)
    x, w = rng.uniform(-1, 3, (50, 16)), rng.standard_normal((16, 5)).astype(np.float32)
    w_q, scales = quantize_weight(w, 1)
    deq = w_q.astype(np.float32) * scales.reshape(1, -1)
    shift = bias_shift(w, deq, x.mean(0), "matmul")
    np.testing.assert_allclose((x @ deq).mean(0) + shift, (x @ w).mean(0), atol=1e-9)


def _conv_stem_net(size: int = 12, seed: int = 0) -> Model:
    """conv3x3(x) -> relu -> depthwise 3x3 -> relu -> conv1x1: MobileNet's first layers."""
    rng = np.random.default_rng(seed)
    w = {"w0": rng.standard_normal((8, 3, 3, 3)).astype("float32") * 0.3,
         "b0": rng.standard_normal((1, 8, 1, 1)).astype("float32") * 0.1,
         "w1": rng.standard_normal((8, 1, 3, 3)).astype("float32") * 0.3,
         "b1": rng.standard_normal((1, 8, 1, 1)).astype("float32") * 0.1,
         "w2": rng.standard_normal((4, 8, 1, 1)).astype("float32") * 0.3,
         "b2": rng.standard_normal((1, 4, 1, 1)).astype("float32") * 0.1}  # fmt: skip
    shape = (1, 3, size, size)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w["w0"]), padding=(1, 1, 1, 1)))
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(w["b0"]))))
            y = bb.emit(relax.op.nn.conv2d(y, relax.const(w["w1"]), padding=(1, 1, 1, 1),
                                           groups=8))  # fmt: skip
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(w["b1"]))))
            y = bb.emit(relax.op.nn.conv2d(y, relax.const(w["w2"])))
            gv = bb.emit_output(relax.op.add(y, relax.const(w["b2"])))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), w, shape)


def _stem_reference(m: Model, x: np.ndarray) -> np.ndarray:
    w = m.weights
    y = np.maximum(numpy_ref.conv2d(x, w["w0"], padding=(1, 1, 1, 1)) + w["b0"], 0)
    y = np.maximum(numpy_ref.conv2d(y, w["w1"], padding=(1, 1, 1, 1), groups=8) + w["b1"], 0)
    return numpy_ref.conv2d(y, w["w2"]) + w["b2"]


def test_bias_correction_lowers_the_output_mean_error_on_onednn():
    """The int8 oneDNN model's per-channel mean error against numpy float64, on the data it
    was calibrated on (inputs with a positive mean), is smaller with the correction."""
    m = _conv_stem_net()
    rng = np.random.default_rng(3)
    data = [rng.uniform(0, 2, m.input_shape).astype("float32") for _ in range(8)]
    ref = np.concatenate([_stem_reference(m, x) for x in data])

    def mean_error(correct: bool) -> float:
        qmod = quantize(m.mod, data, calib_mode="naive", bias_correction=correct,
                        float_stem=False)  # fmt: skip
        run = Runner(build(qmod))
        out = np.concatenate([np.asarray(run(x)) for x in data])
        return float(np.abs((out - ref).mean(axis=(0, 2, 3))).max())

    with_correction, without = mean_error(True), mean_error(False)
    assert with_correction < 0.5 * without, (with_correction, without)


def test_float_stem_keeps_the_first_conv_and_depthwise_float32():
    m = _conv_stem_net()
    data = m.batches(2)
    _, report = quantize(m.mod, data, return_report=True)
    kept = {layer.name: layer.reason_kind for layer in report.layers if not layer.quantized}
    assert kept == {"conv2d_0": "stem", "conv2d_1": "stem"}
    assert "float32 stem" in str(report)
    _, report = quantize(m.mod, data, float_stem=False, return_report=True)
    assert all(layer.quantized for layer in report.layers)


@pytest.mark.parametrize("make", [residual_block, conv_pool_net])
def test_float_stem_leaves_networks_without_a_depthwise_stem_int8(make):
    m = make()
    _, report = quantize(m.mod, m.batches(2), return_report=True)
    assert all(layer.quantized for layer in report.layers if layer.kind == "conv2d")
