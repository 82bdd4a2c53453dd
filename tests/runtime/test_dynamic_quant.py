"""Dynamic (per-call) activation quantization: qmatmul with ``"src_scale": "dynamic"``.

Reference (numpy, the contract of docs/subgraph-format.md "Dynamic quantization"): the range of
this call's ``a`` (including 0) gives u8 ``s = (hi - lo) / 255``, ``zp = rint(-lo / s)`` or s8
``s = max|a| / 127``; ``a_q = saturate(rint(a / s + zp))``; ``y = act((a_q - zp) * s @ (w_q *
ws) + bias) + residual``. The scale is computed in float32 like the runtime; an element within
float32 error of a .5 boundary may still quantize one step apart, which moves an output by at
most ``s * max|w|`` (about 1e-3 of the output range here), so outputs are compared to 2e-3 of
their range. A constant scale, a dropped zero point or a missing per-call update misses by far
more (checked against wrong references).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tvm

from numpy_ref import activation
from runtime_utils import kernel_info
from test_runtime_int8 import QGraph, effective_weights, qname, qweights, weight_scales
from tvm_onednn import _ffi_api

RTOL = 2e-3


def dynamic_params(a: np.ndarray, dtype: str) -> tuple[np.float32, int]:
    lo = np.float32(min(a.min(), 0)) if a.size else np.float32(0)
    hi = np.float32(max(a.max(), 0)) if a.size else np.float32(0)
    if dtype == "uint8":
        s = np.float32((hi - lo) / np.float32(255))
        return (s, int(np.clip(np.rint(-lo / s), 0, 255))) if s > 0 else (np.float32(1), 0)
    s = np.float32(max(-lo, hi) / np.float32(127))
    return (s, 0) if s > 0 else (np.float32(1), 0)


def reference(a, w, ws, bias=None, act=None, residual=None, dtype="uint8", zero_point=True):
    s, zp = dynamic_params(a, dtype)
    zp = zp if zero_point else 0
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    a_q = np.clip(np.rint(a.astype(np.float64) / s + zp), lo, hi)
    y = ((a_q - zp) * s) @ (w.astype(np.float64) * np.asarray(ws, np.float64))
    if bias is not None:
        y = y + bias
    if residual is not None:
        y = y + residual
    return activation(y, act)


def eff(mod, w, node=0):
    """The weights the node computes with (halved by the saturation guard without VNNI)."""
    return effective_weights(w, kernel_info(mod)[node]["weights_rounding"])


def assert_close(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL * scale)
    assert np.std(expected) > 0


def dynamic_graph(a_shape, n, dtype="uint8", bias=True, act=None, add=False, seed=0,
                  symbolic=False):
    rng = np.random.default_rng(seed)
    k = a_shape[-1]
    g = QGraph("dyn_0")
    w = qweights((k, n), seed + 1)
    ws = weight_scales(n, seed + 2)
    shape = ["m", *a_shape[1:]] if symbolic else list(a_shape)
    operands = [g.input(shape), g.const(w)]
    consts = {"w": w, "ws": ws}
    if bias:
        consts["bias"] = rng.standard_normal(n).astype(np.float32)
        operands.append(g.const(consts["bias"]))
    if add:
        operands.append(g.input([*shape[:-1], n]))
    quant = {"src_scale": "dynamic", "src_dtype": dtype, "weight_scales": ws}
    g.output(g.node(qname("matmul", bias, add, act), operands, [*shape[:-1], n], "float32",
                    quant))
    return g, consts


def call(g, mod, *inputs):
    out_shape = (*inputs[0].shape[:-1], g.nodes[-1]["shape"][-1])
    out = tvm.runtime.tensor(np.full(out_shape, np.nan, np.float32))
    mod[g.symbol](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs], out)
    return out.numpy()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("a_shape", [(7, 64), (2, 5, 48)], ids=["2d", "3d"])
@pytest.mark.parametrize("bias,act,add", [(True, None, False), (True, "gelu", False),
                                          (False, None, True), (True, "relu", True)])
def test_dynamic_qmatmul(dtype, a_shape, bias, act, add):
    g, c = dynamic_graph(a_shape, 24, dtype, bias, act, add)
    rng = np.random.default_rng(5)
    a = (rng.standard_normal(a_shape) + 0.7).astype(np.float32)  # asymmetric range
    inputs = [a]
    residual = None
    if add:
        residual = rng.standard_normal((*a_shape[:-1], 24)).astype(np.float32)
        inputs.append(residual)
    mod = g.build()
    out = call(g, mod, *inputs)
    assert_close(out, reference(a, eff(mod, c["w"]), c["ws"], c.get("bias"), act, residual,
                                dtype))
    (info,) = kernel_info(mod)
    assert not info["impl"].startswith("ref"), info
    assert info["src_dtype"] == {"uint8": "u8", "int8": "s8"}[dtype]
    assert info["dst_dtype"] == "f32"


def test_scale_and_zero_point_follow_each_call():
    """The same module at two very different ranges: a scale fixed at the first call, or a
    zero point ignored, would miss the second call by far."""
    g, c = dynamic_graph((6, 32), 16, "uint8")
    mod = g.build()
    rng = np.random.default_rng(1)
    small = (rng.standard_normal((6, 32)) * 0.01 + 0.005).astype(np.float32)
    large = (rng.standard_normal((6, 32)) * 50 - 20).astype(np.float32)
    for a in (small, large, small):
        out = call(g, mod, a)
        expected = reference(a, eff(mod, c["w"]), c["ws"], c["bias"])
        assert_close(out, expected)
    wrong = reference(large, eff(mod, c["w"]), c["ws"], c["bias"], zero_point=False)
    assert np.abs(call(g, mod, large) - wrong).max() > 100 * RTOL * np.abs(wrong).max()
    # s8 symmetric spends half its levels on a one-sided range: u8 asymmetric is closer
    exact = large.astype(np.float64) @ (c["w"] * np.asarray(c["ws"])) + c["bias"]
    err_u8 = np.abs(reference(large, c["w"], c["ws"], c["bias"]) - exact).max()
    err_s8 = np.abs(reference(large, c["w"], c["ws"], c["bias"], dtype="int8") - exact).max()
    assert err_u8 < err_s8


def test_symbolic_rows():
    g, c = dynamic_graph((4, 40), 8, "uint8", symbolic=True)
    assert g.doc()["version"] == 2
    mod = g.build()
    for m in (1, 5, 33):
        a = np.random.default_rng(m).standard_normal((m, 40)).astype(np.float32)
        if m == 1:
            a[:] = np.abs(a)  # one row, one-sided: zero point 0
        assert_close(call(g, mod, a), reference(a, eff(mod, c["w"]), c["ws"], c["bias"]))


def test_all_zero_input_gives_the_bias():
    g, c = dynamic_graph((3, 16), 8, "uint8", act="relu")
    out = call(g, g.build(), np.zeros((3, 16), np.float32))
    np.testing.assert_allclose(out, np.maximum(np.broadcast_to(c["bias"], (3, 8)), 0), atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_an_error(bad):
    g, _ = dynamic_graph((3, 40), 8, "uint8")
    mod = g.build()
    a = np.ones((3, 40), np.float32)
    a[2, 37] = bad  # in the scalar tail of the reduction (40 = 2 * 16 + 8)
    with pytest.raises(ValueError, match=r"dyn_0: node 0 \(onednn.qmatmul_bias\): a holds a NaN "
                                         r"or an infinity"):
        call(g, mod, a)
    a[2, 37] = 1.0
    call(g, mod, a)  # the module still runs afterwards


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_quantization_uses_the_whole_range(dtype, threads):
    """Above 16k values each OpenMP thread reads the range of its own chunk and then quantizes
    it: the scale must come from all chunks (the extremes sit in the first and the last one;
    129 * 261 values split into no whole number of cache lines), and a NaN in the last chunk
    is still an error."""
    g, c = dynamic_graph((129, 261), 16, dtype)
    mod = g.build()
    rng = np.random.default_rng(8)
    a = rng.standard_normal((129, 261)).astype(np.float32)
    a[0, 0], a[-1, -1] = -9.0, 31.0
    before = _ffi_api.get_num_threads()
    _ffi_api.set_num_threads(threads)
    try:
        out = call(g, mod, a)
        assert_close(out, reference(a, eff(mod, c["w"]), c["ws"], c["bias"], dtype=dtype))
        a[-1, -2] = np.nan
        with pytest.raises(ValueError, match="a holds a NaN or an infinity"):
            call(g, mod, a)
    finally:
        _ffi_api.set_num_threads(before)


def test_concurrent_calls_keep_their_own_scales():
    g, c = dynamic_graph((8, 32), 16, "uint8")
    mod = g.build()
    w_eff = eff(mod, c["w"])
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            a = (rng.standard_normal((8, 32)) * rng.uniform(0.01, 100)).astype(np.float32)
            try:
                assert_close(call(g, mod, a), reference(a, w_eff, c["ws"], c["bias"]))
            except AssertionError as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def _error(doc, match):
    with pytest.raises(ValueError, match=match):
        _ffi_api.create_module(json.dumps(doc))


def _q(doc):
    return doc["nodes"][-1]["quant"]


@pytest.mark.parametrize("mutate,match", [
    (lambda d: _q(d).update(src_scale="static"),
     'quant.src_scale must be a number or "dynamic", got the string "static"'),
    (lambda d: _q(d).update(src_dtype="int16"),
     'quant.src_dtype must be "uint8" .asymmetric. or "int8" .symmetric., got "int16"'),
    (lambda d: _q(d).update(src_zero_point=0),
     "quant.src_zero_point must be absent with a dynamic src_scale"),
    (lambda d: d["inputs"][0].update(dtype="uint8"),
     r"a \(input 0\) has dtype 'uint8', expected 'float32' \(quant.src_scale is \"dynamic\"\)"),
    (lambda d: (d["nodes"][0].update(dtype="uint8"), _q(d).update(dst_scale=0.1)),
     "a qmatmul with a dynamic src_scale writes float32, not uint8"),
    (lambda d: (_q(d).update(src_scale=0.1), _q(d).update(src_dtype="uint8")),
     'quant.src_dtype is only valid with "src_scale": "dynamic"'),
])
def test_invalid_dynamic_documents(mutate, match):
    g, _ = dynamic_graph((4, 16), 8, "uint8")
    doc = g.doc()
    mutate(doc)
    _error(doc, match)


def test_dynamic_conv_is_rejected():
    g = QGraph()
    g.output(g.node(qname("conv2d"), [g.input((1, 4, 5, 5)), g.const(qweights((4, 4, 1, 1), 0))],
                    (1, 4, 5, 5), "float32",
                    {"src_scale": "dynamic", "weight_scales": [0.1]},
                    strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1], groups=1))
    _error(g.doc(), r'quant.src_scale "dynamic" \(per-call quantization\) is supported by '
                    r"onednn.qmatmul\* only")


def test_readers_of_one_tensor_share_its_quantization():
    """q / k / v style: three dynamic qmatmuls of one input quantize it once (one host step
    for range and quantization, then three matmuls); a fourth reading it as s8 quantizes
    again."""
    rng = np.random.default_rng(3)
    g = QGraph("dyn_0")
    x = g.input([5, 32])
    consts = []
    for i, dtype in enumerate(["uint8", "uint8", "uint8", "int8"]):
        w, ws = qweights((32, 16), 10 + i), weight_scales(16, 20 + i)
        consts.append((w, ws, dtype))
        g.output(g.node(qname("matmul"), [x, g.const(w)], [5, 16], "float32",
                        {"src_scale": "dynamic", "src_dtype": dtype, "weight_scales": ws}))
    mod = g.build()
    a = (rng.standard_normal((5, 32)) - 0.4).astype(np.float32)
    outs = [tvm.runtime.tensor(np.full((5, 16), np.nan, np.float32)) for _ in consts]
    mod[g.symbol](tvm.runtime.tensor(a), *outs)
    for i, (out, (w, ws, dtype)) in enumerate(zip(outs, consts)):
        assert_close(out.numpy(), reference(a, eff(mod, w, i), ws, dtype=dtype))
    assert [n["step"] for n in kernel_info(mod)] == [1, 2, 3, 5]


def test_save_load_round_trip():
    g, c = dynamic_graph((2, 6, 32), 16, "uint8", act="gelu", symbolic=True)
    mod = g.build()
    a = np.random.default_rng(4).standard_normal((3, 6, 32)).astype(np.float32)
    expected = call(g, mod, a)
    loaded = _ffi_api.load_from_bytes(_ffi_api.save_to_bytes(mod))
    loaded["__init_" + g.symbol]([tvm.runtime.tensor(v) for v in g.const_values])
    np.testing.assert_array_equal(call(g, loaded, a), expected)
