"""Realize: the QDQ module's structure, its scales and weights, fake-quant numerics."""

import numpy as np
import pytest
from tvm import relax
from tvm.ir.expr import Constant

from tvm_onednn.quantize import quantize
from tvm_onednn.testing import Runner, build, run

from ..runtime import numpy_ref
from .helpers import FixedRanges, const, main_calls, main_ops
from .models import conv_pool_net, mlp, residual_block, single_conv, small_cnn

# Preset ranges: x signed -> s8 with scale 2.54 / 127 = 0.02; relu output -> u8, 2.55 / 255.
BLOCK_RANGES = {"conv2d_0_input": (-2.54, 1.0), "conv2d_0_output": (0.0, 2.55)}


def weight_dequantizes(qmod):
    """The dequantize calls whose data is a constant (the int8 weights), in order."""
    return [d for d in main_calls(qmod, "dequantize") if isinstance(d.args[0], Constant)]


def _block(**kwargs):
    model = residual_block()
    collector = FixedRanges(BLOCK_RANGES)
    return model, quantize(
        model.mod, [model.batches(1)[0]], calib_mode="custom", collector=collector, **kwargs
    )


def test_residual_block_structure():
    _, qmod = _block()
    assert main_ops(qmod) == [
        "quantize",  # x -> s8: the int8 region's entry
        "dequantize",
        "dequantize",
        "nn.conv2d",
        "add",
        "nn.relu",  # data, weight, conv0
        "quantize",  # conv0 writes u8 (its only user is int8)
        "dequantize",
        "dequantize",
        "dequantize",  # conv1: data, residual x (int8), weight
        "nn.conv2d",
        "add",
        "add",
        "nn.relu",  # conv1 -> the model output: float32, no quantize
    ]
    q_x, q_y = main_calls(qmod, "quantize")
    assert str(q_x.attrs.out_dtype) == "int8" and str(q_y.attrs.out_dtype) == "uint8"
    assert const(q_x.args[1]) == pytest.approx(0.02) and const(q_y.args[1]) == pytest.approx(0.01)
    deq = main_calls(qmod, "dequantize")
    # conv1's residual operand is x's int8 tensor, dequantized with x's scale.
    assert deq[3].args[0].same_as(deq[0].args[0])
    assert const(deq[3].args[1]) == pytest.approx(0.02)
    assert all(int(const(d.args[2])) == 0 for d in deq)  # zero points are 0
    assert relax.analysis.check_well_formed(qmod)


def test_channel_wise_weights_are_symmetric_s8_per_output_channel(vnni_cpu):
    model, qmod = _block()
    w0 = weight_dequantizes(qmod)[0]
    w_q, scales = const(w0.args[0]), const(w0.args[1])
    w = model.weights["w0"]
    expected_scales = np.abs(w).max(axis=(1, 2, 3)) / 127
    assert int(w0.attrs.axis) == 0
    np.testing.assert_allclose(scales, expected_scales, rtol=1e-6)
    assert w_q.dtype == np.int8 and np.abs(w_q).max(axis=(1, 2, 3)).tolist() == [127] * 8
    np.testing.assert_array_equal(w_q, np.round(w / expected_scales.reshape(-1, 1, 1, 1)))


def test_tensor_wise_weights_have_one_scale(vnni_cpu):
    model, qmod = _block(quantize_granularity="tensor-wise")
    scale = const(weight_dequantizes(qmod)[0].args[1])
    assert scale.shape == () and scale == pytest.approx(np.abs(model.weights["w0"]).max() / 127)


def test_matmul_weights_are_scaled_along_n(vnni_cpu):
    model = mlp()
    qmod = quantize(model.mod, model.batches(2))
    w_dq = weight_dequantizes(qmod)
    assert [int(d.attrs.axis) for d in w_dq] == [1, 1, 1]
    scales = const(w_dq[0].args[1])
    np.testing.assert_allclose(scales, np.abs(model.weights["w0"]).max(axis=0) / 127, rtol=1e-6)


@pytest.mark.parametrize(
    "dtype, expected",
    [
        ("int8", [("int8", 0.02), ("int8", 2.55 / 127)]),
        ("uint8", [("uint8", 1.0 / 255), ("uint8", 0.01)]),
    ],  # negatives saturate at 0
)
def test_quantized_dtype_can_be_forced(dtype, expected):
    _, qmod = _block(quantized_dtype=dtype)
    got = [(str(q.attrs.out_dtype), float(const(q.args[1]))) for q in main_calls(qmod, "quantize")]
    assert [d for d, _ in got] == [d for d, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-6)


def test_excluded_layer_stays_float32():
    _, qmod = _block(exclude_layers=["conv2d_1"])
    # Only conv0 is int8, and it writes float32 for the float32 conv1.
    assert main_ops(qmod) == [
        "quantize",
        "dequantize",
        "dequantize",
        "nn.conv2d",
        "add",
        "nn.relu",
        "nn.conv2d",
        "add",
        "add",
        "nn.relu",
    ]
    conv1 = main_calls(qmod, "nn.conv2d")[1]
    assert isinstance(conv1.args[1], Constant) and str(conv1.args[1].ty.dtype) == "float32"
    assert len(weight_dequantizes(qmod)) == 1


def test_pools_requantize_with_their_input_scale():
    model = conv_pool_net()
    qmod = quantize(model.mod, model.batches(2))
    ops = main_ops(qmod)
    for pool in ("nn.max_pool2d", "nn.avg_pool2d", "mean"):
        i = ops.index(pool)
        assert ops[i - 1 : i + 2] == ["dequantize", pool, "quantize"]
    var2val = relax.analysis.get_var2val(qmod["main"])
    quantizes = {q.args[0]: q for q in main_calls(qmod, "quantize")}
    for pool in main_calls(qmod, "nn.max_pool2d") + main_calls(qmod, "nn.avg_pool2d"):
        dequantize = var2val[pool.args[0]]
        pool_var = next(v for v, value in var2val.items() if value.same_as(pool))
        requantize = quantizes[pool_var]
        assert float(const(requantize.args[1])) == float(const(dequantize.args[1]))
        assert str(requantize.attrs.out_dtype) == str(dequantize.args[0].ty.dtype) == "uint8"
    # The int8 global pool is read by a float32 reshape: a dequantize follows it.
    assert ops[-2:] == ["dequantize", "reshape"]


def test_single_conv_matches_numpy_fake_quant(vnni_cpu):
    model = single_conv()
    qmod = quantize(model.mod, model.batches(4), bias_correction=False)  # the plain QDQ form
    x = model.batches(1, seed=9)[0]
    q_x = main_calls(qmod, "quantize")[0]
    s_x = float(const(q_x.args[1]))
    w = model.weights["w"]
    s_w = np.abs(w).max(axis=(1, 2, 3)) / 127
    x_fq = np.clip(np.round(x / np.float32(s_x)), -128, 127) * s_x
    w_fq = np.round(w / s_w.reshape(-1, 1, 1, 1)) * s_w.reshape(-1, 1, 1, 1)
    expected = np.maximum(
        numpy_ref.conv2d(x_fq, w_fq, padding=(1, 1, 1, 1)) + model.weights["b"], 0
    )
    actual = run(qmod, [x], pipeline="default")
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    # ... and differs from float32 by quantization error.
    assert not np.allclose(actual, run(model.mod, [x], pipeline="default"), atol=1e-4)


@pytest.mark.parametrize("make", [small_cnn, residual_block, conv_pool_net])
def test_fake_quant_is_within_a_few_steps_of_float32(make, vnni_cpu):
    model = make()
    qmod = quantize(model.mod, model.batches(8))
    fp32, int8 = Runner(build(model.mod, "onednn")), Runner(build(qmod, "default"))
    for x in model.batches(2, seed=5):
        expected, actual = fp32(x), int8(x)
        step = np.abs(expected).max() / 127  # one int8 step of the output's range
        err = np.abs(actual - expected)
        assert 0 < err.max() <= 3 * step
        assert err.mean() <= step


def test_calib_mode_none_computes_scales_at_run_time(vnni_cpu):
    model = residual_block()
    qmod = quantize(model.mod, calib_mode="none")
    ops = main_ops(qmod)
    # Each quantize takes a scale computed in the graph from its tensor: signed x as u8 over
    # [min(x, 0), max(x, 0)] with a zero point (the dynamic default), the relu output from
    # its max |x|.
    assert ops[:4] == ["min", "minimum", "max", "maximum"] and "quantize" in ops[4:13]
    assert ops.count("quantize") == 2 and ops.count("abs") == 1
    q_x, q_y = main_calls(qmod, "quantize")
    assert str(q_x.attrs.out_dtype) == "uint8" and str(q_y.attrs.out_dtype) == "uint8"
    x = model.batches(1, seed=3)[0]
    fp32, int8 = Runner(build(model.mod, "onednn")), Runner(build(qmod, "default"))
    for gain in (1.0, 50.0):  # the scales follow the data: no saturation at 50x
        expected, actual = fp32(gain * x), int8(gain * x)
        assert np.abs(actual - expected).max() <= 3 * np.abs(expected).max() / 127


def test_quantize_returns_a_new_module():
    model = residual_block()
    before = model.mod.script(show_meta=False)
    quantize(model.mod, model.batches(1))
    assert model.mod.script(show_meta=False) == before
