"""s8 weight encodings: full 8-bit, and the bounded ones oneDNN computes exactly on AVX2."""


import numpy as np
import pytest

from tvm_onednn.quantize import quantize, weights
from tvm_onednn.quantize.weights import (
    FULL_8BIT,
    HALVED_EXACT,
    PAIR_BOUNDED,
    WeightEncoding,
    quantize_weight,
)

from .helpers import const, main_calls
from .models import residual_block

RNG = np.random.default_rng(0)
W = (RNG.standard_normal((4, 3, 3, 3)) * [[[[0.5]]], [[[2.0]]], [[[0.01]]], [[[1.0]]]]).astype(
    "float32"
)
W[3] = 0.0  # an all-zero output channel


def _amax(w):
    return np.abs(w).max(axis=(1, 2, 3))


def test_full_8bit_channel_wise():
    w_q, scales = quantize_weight(W, axis=0)
    assert w_q.dtype == np.int8 and scales.dtype == np.float32
    np.testing.assert_allclose(scales[:3], _amax(W)[:3] / 127, rtol=1e-6)
    assert scales[3] == 1.0 and not w_q[3].any()
    assert np.abs(w_q).max(axis=(1, 2, 3)).tolist() == [127, 127, 127, 0]
    np.testing.assert_allclose(w_q * scales.reshape(-1, 1, 1, 1), W, atol=scales.max() / 2)


def test_seven_bit_for_unsigned_activations():
    w_q, scales = quantize_weight(W, axis=0, encoding=WeightEncoding(63))
    assert np.abs(w_q).max(axis=(1, 2, 3)).tolist() == [63, 63, 63, 0]
    np.testing.assert_allclose(scales[:3], _amax(W)[:3] / 63, rtol=1e-6)


def test_seven_bit_even_values_for_signed_activations():
    w_q, scales = quantize_weight(W, axis=0, encoding=WeightEncoding(63, 2))
    w7, s7 = quantize_weight(W, axis=0, encoding=WeightEncoding(63))
    assert np.all(w_q % 2 == 0) and np.abs(w_q).max() == 126
    # oneDNN halves them exactly: the same real weights as the 7-bit encoding.
    np.testing.assert_array_equal(w_q // 2, w7)
    np.testing.assert_allclose(w_q * scales.reshape(-1, 1, 1, 1), w7 * s7.reshape(-1, 1, 1, 1))


def test_tensor_wise_and_matmul_axis():
    w = RNG.standard_normal((16, 8)).astype("float32")
    _, scale = quantize_weight(w, axis=1, granularity="tensor-wise")
    assert scale.shape == () and scale == pytest.approx(np.abs(w).max() / 127)
    _, scales = quantize_weight(w, axis=1)
    np.testing.assert_allclose(scales, np.abs(w).max(axis=0) / 127, rtol=1e-6)
    with pytest.raises(ValueError, match="quantize_granularity"):
        quantize_weight(w, axis=1, granularity="row-wise")


def _pair_sums(w_q, axis):
    w = np.moveaxis(np.abs(w_q.astype(np.int64)), axis, -1)
    if w.shape[-1] % 2:
        w = np.concatenate([w, np.zeros(w.shape[:-1] + (1,), w.dtype)], -1)
    return w[..., 0::2] + w[..., 1::2]


@pytest.mark.parametrize("shape, axis, reduce_axis", [((8, 7, 3, 3), 0, 1), ((33, 16), 1, 0)])
@pytest.mark.parametrize("granularity", ["channel-wise", "tensor-wise"])
def test_pair_bounded_encoding(shape, axis, reduce_axis, granularity):
    """Neighbouring pairs along the reduction axis sum to <= 128; otherwise round to nearest."""
    w = RNG.standard_normal(shape).astype("float32")
    w_q, scales = quantize_weight(w, axis, granularity, PAIR_BOUNDED, reduce_axis)
    assert np.abs(w_q).max() <= 127 and _pair_sums(w_q, reduce_axis).max() == 128
    view = [1] * w.ndim
    if granularity == "channel-wise":
        view[axis] = -1
    real = w / scales.reshape(view)
    error = np.abs(w_q - real)
    assert error.max() <= 1.0 and (error > 0.5 + 1e-4).mean() < 0.01  # few rounded down
    # Finer than 7 bits: every scale is below the 7-bit one (max|w| / 63).
    _, s7 = quantize_weight(w, axis, granularity, WeightEncoding(63))
    assert np.all(scales < s7)


def test_pair_bounded_depthwise_weights_keep_all_8_bits():
    """One input channel per group: no pairs, so the encoding is full 8-bit."""
    w = RNG.standard_normal((16, 1, 3, 3)).astype("float32")
    w_q, scales = quantize_weight(w, 0, encoding=PAIR_BOUNDED, reduce_axis=1)
    w8, s8 = quantize_weight(w, 0, encoding=FULL_8BIT)
    np.testing.assert_array_equal(w_q, w8)
    np.testing.assert_array_equal(scales, s8)


def test_pair_bounded_scale_is_the_pair_sum_or_max():
    w = np.zeros((2, 4, 1, 1), "float32")
    w[0, :, 0, 0] = [1.0, 1.0, 0.0, 0.0]  # pairs bound it: scale 2 / 128
    w[1, :, 0, 0] = [1.0, 0.0, 0.0, 0.0]  # max bounds it: scale 1 / 127
    w_q, scales = quantize_weight(w, 0, encoding=PAIR_BOUNDED, reduce_axis=1)
    np.testing.assert_allclose(scales, [2 / 128, 1 / 127], rtol=1e-6)
    assert w_q[:, :, 0, 0].tolist() == [[64, 64, 0, 0], [127, 0, 0, 0]]
    with pytest.raises(ValueError, match="reduction axis"):
        quantize_weight(w, 0, encoding=PAIR_BOUNDED)


def test_qdq_module_uses_the_cpu_encoding(avx2_cpu):
    model = residual_block()
    qmod = quantize(model.mod, model.batches(2))
    w0, w1 = [d for d in main_calls(qmod, "dequantize") if hasattr(d.args[0], "value")]
    # conv0 reads s8 x: even 7-bit weights; conv1 reads the u8 ReLU output: pair-bounded.
    assert np.all(const(w0.args[0]) % 2 == 0) and np.abs(const(w0.args[0])).max() == 126
    assert _pair_sums(const(w1.args[0]), 1).max() == 128


def test_runtime_isa_decides_the_encoding(monkeypatch):
    from tvm_onednn import _ffi_api

    detect = weights.has_int8_dot_product.__wrapped__
    assert detect() == _ffi_api.get_int8_saturation_guard()["vnni"]
    for vnni in (False, True):
        info = {"mode": -1, "active": not vnni, "vnni": vnni}
        monkeypatch.setattr(_ffi_api, "get_int8_saturation_guard", lambda info=info: info)
        assert detect() is vnni
    monkeypatch.setattr(weights, "has_int8_dot_product", lambda: False)
    encoding = weights.weight_encoding
    assert encoding("int8") == HALVED_EXACT
    assert encoding("uint8") == encoding("uint8", "matmul") == encoding("int8", "matmul")
    assert encoding("uint8") == PAIR_BOUNDED
    monkeypatch.setattr(weights, "has_int8_dot_product", lambda: True)
    assert encoding("int8") == encoding("uint8") == encoding("uint8", "matmul") == FULL_8BIT
