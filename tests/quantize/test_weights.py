"""s8 weight encodings: full 8-bit, and the 7-bit ones oneDNN computes exactly on AVX2."""

from pathlib import Path

import numpy as np
import pytest

from tvm_onednn.quantize import quantize, weights
from tvm_onednn.quantize.weights import WeightEncoding, quantize_weight

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


def test_qdq_module_uses_the_cpu_encoding(avx2_cpu):
    model = residual_block()
    qmod = quantize(model.mod, model.batches(2))
    w0, w1 = [d for d in main_calls(qmod, "dequantize") if hasattr(d.args[0], "value")]
    # conv0 reads s8 x: even 7-bit weights; conv1 reads the u8 ReLU output: |w| <= 63.
    assert np.all(const(w0.args[0]) % 2 == 0) and np.abs(const(w0.args[0])).max() == 126
    assert np.abs(const(w1.args[0])).max() == 63


def test_cpu_flags_decide_the_encoding(monkeypatch):
    detect = weights.has_int8_dot_product.__wrapped__
    for flags, expected in [
        ("fpu avx2 fma", False),
        ("avx2 avx512_vnni", True),
        ("avx2 avx_vnni", True),
        ("amx_int8 avx2", True),
    ]:
        monkeypatch.setattr(Path, "read_text", lambda self, f=flags: f"flags\t\t: {f}\n")
        assert detect() is expected
    monkeypatch.setattr(weights, "has_int8_dot_product", lambda: False)
    assert weights.weight_encoding("int8") == WeightEncoding(63, 2)
    assert weights.weight_encoding("uint8") == WeightEncoding(63)
    monkeypatch.setattr(weights, "has_int8_dot_product", lambda: True)
    assert (
        weights.weight_encoding("int8") == weights.weight_encoding("uint8") == WeightEncoding(127)
    )
