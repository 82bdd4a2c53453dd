"""int8 nodes with non-zero zero points (issue 13) vs the numpy reference of test_runtime_int8.

Semantics (docs/subgraph-format.md, "int8 nodes"): real = scale * (q - zero_point); outputs
``q = saturate(rint(y / dst_scale) + dst_zero_point)``. Tolerances as in test_runtime_int8:
int8 outputs within one quantization step on at most 2 % of the elements (float32 vs float64
rounding at .5 boundaries), float32 outputs to rtol 1e-4 of the output's range; a wrong or
ignored zero point shifts every element by many steps.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import tvm

from runtime_utils import kernel_info
from test_runtime_int8 import (
    LIMITS,
    NP_DTYPES,
    POOLS,
    QGraph,
    assert_q_equal,
    check_outputs,
    conv_graph,
    finalize_dst,
    matmul_graph,
    pool_out_shape,
    qdata,
    reference,
    rng,
    roundings_of,
)
from tvm_onednn import _ffi_api

# zero points that make u8 carry a signed range (as the quantizer's asymmetric mode does) and
# a shifted s8
ZP = {"uint8": 128, "int8": -21}  # odd: ties round after adding the zero point
SRC_ZP = {"uint8": 117, "int8": 9}


def set_zero_points(g, inputs, dst, src_zp=True, dst_zp=True, res_zp=True):
    """Give the last node non-zero zero points, then re-derive its dst scale."""
    q = g.nodes[-1]["quant"]
    src_dtype = g.info(g.nodes[-1]["inputs"][0])["dtype"]
    if src_zp:
        q["src_zero_point"] = SRC_ZP[src_dtype]
    if res_zp and "residual_scale" in q:
        q["residual_zero_point"] = ZP[g.info(g.nodes[-1]["inputs"][-1])["dtype"]]
    if dst_zp and dst != "float32":
        q["dst_zero_point"] = ZP[dst]
    finalize_dst(g, inputs, dst)


def run_and_check(g, inputs):
    mod = g.build()
    outs = g.run(mod, inputs)
    check_outputs(g, mod, inputs, outs)
    return mod, outs


@pytest.mark.parametrize("src,dst", [("uint8", "uint8"), ("uint8", "int8"), ("int8", "uint8"),
                                     ("uint8", "float32")])
@pytest.mark.parametrize("res", [None, "uint8", "int8", "float32"])
def test_qconv_zero_points(src, dst, res):
    g, inputs = conv_graph(src=src, dst=dst, bias=True, add=res is not None,
                           res=res or "int8", act=None)
    set_zero_points(g, inputs, dst)
    mod, _ = run_and_check(g, inputs)
    info = kernel_info(mod)[-1]
    assert not info["impl"].startswith("ref"), info  # brgemm / jit keep src zero points


@pytest.mark.parametrize("res", ["uint8", "int8"])
def test_qconv_residual_zero_point_summed_in_place(res):
    """The residual comes from a qconv inside the region: sum(scale, zero_point) post-op."""
    g, inputs = conv_graph(src="uint8", dst=res, bias=True, add=True, res=res,
                           residual_kind="node")
    g.nodes[0]["quant"]["dst_zero_point"] = ZP[res]  # the residual's producer
    g.nodes[-1]["quant"]["residual_zero_point"] = ZP[res]
    set_zero_points(g, inputs, res, res_zp=False)
    mod, _ = run_and_check(g, inputs)
    assert kernel_info(mod)[-1]["residual"] in ("sum_inplace", "sum_inplace_copy",
                                                 "binary_add")


@pytest.mark.parametrize("a_shape", [(6, 40), (2, 5, 40)], ids=["2d", "batched"])
@pytest.mark.parametrize("src,dst", [("uint8", "int8"), ("uint8", "float32"), ("int8", "uint8")])
@pytest.mark.parametrize("res", [None, "uint8", "float32"])
def test_qmatmul_zero_points(a_shape, src, dst, res):
    g, inputs = matmul_graph(a_shape, 24, src=src, dst=dst, bias=True, add=res is not None,
                             res=res or "int8", act="gelu")
    set_zero_points(g, inputs, dst)
    mod, _ = run_and_check(g, inputs)
    info = kernel_info(mod)[0]
    assert not info["impl"].startswith("ref"), info


def test_zero_points_change_the_result():
    """The reference with zero points ignored is far off: the test can see a dropped zp."""
    g, inputs = matmul_graph((6, 40), 24, src="uint8", dst="float32", bias=True)
    set_zero_points(g, inputs, "float32")
    mod = g.build()
    (out,) = g.run(mod, inputs)
    g0 = copy.deepcopy(g)
    g0.nodes[-1]["quant"]["src_zero_point"] = 0
    (wrong,) = reference(g0, inputs, roundings_of(mod))
    assert np.abs(out - wrong).max() > 100 * np.abs(out).max() * 1e-4


def test_qmatmul_zero_points_symbolic_batch():
    """One version-2 document (a: [n, 5, 32]) run at n = 1, 3 against the reference."""
    g, _ = matmul_graph((2, 5, 32), 16, src="uint8", dst="uint8", bias=True, act="relu")
    q = g.nodes[-1]["quant"]
    q.update(src_zero_point=100, dst_zero_point=30, dst_scale=0.05)
    g.inputs[0]["shape"][0] = "n"
    g.nodes[-1]["shape"][0] = "n"
    mod = g.build()
    for n in (1, 3):
        x = qdata((n, 5, 32), "uint8", 60 + n)
        out = tvm.runtime.tensor(np.zeros((n, 5, 16), np.uint8))
        mod[g.symbol](tvm.runtime.tensor(x), out)
        (ref,) = reference(g, [x], roundings_of(mod))
        assert_q_equal(out.numpy(), ref, "uint8")


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantize_dequantize_zero_points_exact(dtype):
    """Power-of-two scale: x / scale is exact, so every element matches (ties to even)."""
    g = QGraph()
    scale, zp = 0.0625, ZP[dtype]
    x = (np.rint(rng(3).standard_normal((4, 33)) * 160) / 2 * scale).astype(np.float32)
    qv = g.node("onednn.quantize", [g.input(x.shape)], x.shape, dtype,
                {"dst_scale": scale, "dst_zero_point": zp})
    g.output(qv)
    g.output(g.node("onednn.dequantize", [qv], x.shape, "float32",
                    {"src_scale": scale, "src_zero_point": zp}))
    mod = g.build()
    q_out, x_out = g.run(mod, [x])
    lo, hi = LIMITS[dtype]
    expected = np.clip(np.rint(x.astype(np.float64) / scale + zp), lo, hi)
    np.testing.assert_array_equal(q_out, expected.astype(q_out.dtype))
    assert (q_out == lo).any() and (q_out == hi).any()  # saturates on both sides
    np.testing.assert_array_equal(x_out, scale * (q_out.astype(np.float32) - zp))
    for node in kernel_info(mod):
        assert not node["impl"].startswith("ref"), node


POOL_ZP_CASES = [("max", False), ("avg", False), ("avg", True), ("avg_exclude_pad", True),
                 ("global", True)]


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("kind,rescale", POOL_ZP_CASES)
def test_qpools_zero_points(kind, rescale, dtype):
    op, attrs = POOLS[kind]
    g = QGraph()
    x_shape = (2, 16, 9, 9)
    x = qdata(x_shape, dtype, 70)
    zp_src = ZP[dtype]
    zp_dst = zp_src if kind == "max" else zp_src + (7 if dtype == "int8" else -40)
    g.output(g.node(op, [g.input(x_shape, dtype)], pool_out_shape(kind, x_shape), dtype,
                    {"src_scale": 0.05, "src_zero_point": zp_src,
                     "dst_scale": 0.05 * (0.71 if rescale else 1.0), "dst_zero_point": zp_dst},
                    **attrs))
    mod = g.build()
    (out,) = g.run(mod, [x])
    (ref,) = reference(g, [x], roundings_of(mod))
    if kind == "max":
        np.testing.assert_array_equal(out, ref.astype(out.dtype))
    else:
        assert_q_equal(out, ref, dtype, min_distinct=4)
    assert not kernel_info(mod)[-1]["impl"].startswith("ref")


def _error(doc, match):
    with pytest.raises(ValueError, match=match):
        _ffi_api.create_module(json.dumps(doc))


def test_avg_pool_with_padding_and_src_zero_point_is_rejected():
    op, attrs = POOLS["avg_pad_ceil"]
    g = QGraph()
    x_shape = (1, 4, 9, 9)
    g.output(g.node(op, [g.input(x_shape, "uint8")], pool_out_shape("avg_pad_ceil", x_shape),
                    "uint8", {"src_scale": 0.05, "src_zero_point": 128, "dst_scale": 0.05},
                    **attrs))
    _error(g.doc(), r"quant.src_zero_point is 128: int8 avg pooling with count_include_pad "
                    r"and padding \(or ceil_mode\) needs a src zero point of 0")


@pytest.mark.parametrize("update,match", [
    (dict(dst_zero_point=3), r"quant.dst_zero_point is 3, but that value is float32"),
    (dict(src_zero_point=-1), r"quant.src_zero_point = -1 is outside the range of uint8"),
    (dict(src_zero_point=True), "quant.src_zero_point must be an integer, got bool"),
])
def test_zero_point_errors(update, match):
    g, _ = matmul_graph((4, 16), 8, src="uint8", dst="float32", bias=False)
    g.nodes[-1]["quant"].update(update)
    _error(g.doc(), match)


def test_float32_residual_with_zero_point_is_rejected():
    g, _ = matmul_graph((4, 16), 8, src="uint8", dst="float32", bias=False, add=True,
                        res="float32")
    g.nodes[-1]["quant"]["residual_zero_point"] = 5
    _error(g.doc(), "quant.residual_zero_point is 5, but that value is float32")

