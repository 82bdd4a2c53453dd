"""int8 nodes (docs/subgraph-format.md, "int8 nodes") vs a numpy reference of the doc's semantics.

The reference quantizes with numpy, computes in float64 and requantizes with round-half-to-even
(``np.rint``): ``q = clip(rint(y / dst_scale), qmin, qmax)``. oneDNN computes the same in float32
(scales folded into one f32 multiplier, rounding to nearest even), so a value whose float64 ``y /
dst_scale`` lies within float32 error of a .5 boundary may round the other way: int8 outputs may
differ by **one quantization step**, and only rarely (at most 2 % of the elements; a systematic
error such as truncation or a wrong scale changes far more). Chains compound this: see
``test_int8_chain``.

Weights: without VNNI the runtime (or oneDNN itself, for s8-source convs) computes with
``2 * rne(w / 2)`` instead of ``w`` to avoid the s16 saturation of ``vpmaddubsw``
(``int8_attrs.h``, "saturation guard"). ``get_kernel_info`` reports it per node
(``weights_rounding``) and the reference uses those effective weights.
"""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import tvm

from numpy_ref import activation, conv2d, global_avg_pool2d, pool2d
from runtime_utils import ACT_ATTRS, ACTIVATIONS, Subgraph, kernel_info, stats
from tvm_onednn import _ffi_api

LIMITS = {"uint8": (0, 255), "int8": (-128, 127)}
NP_DTYPES = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32}
CONV3 = dict(strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)


def vnni() -> bool:
    return _ffi_api.get_int8_saturation_guard()["vnni"]


# ---------------------------------------------------------------- building and running


class QGraph(Subgraph):
    """One region document with int8 values: constants keep their dtype, nodes carry quant."""

    def __init__(self, symbol="q_0"):
        super().__init__(symbol)

    def const(self, value):
        return self._add_const(np.ascontiguousarray(value))

    def node(self, op, inputs, shape, dtype, quant, **attrs):
        if quant:  # the runtime reads scales as float32: write float32 values (in place:
            for k, v in quant.items():  # callers set dst_scale later through their dict)
                quant[k] = f32(v)
        ref = super().node(op, inputs, shape, dtype, **attrs)
        self.nodes[-1]["quant"] = quant
        return ref

    def run(self, mod, inputs):
        args = []
        for spec, x in zip(self.inputs, inputs):
            assert x.dtype == NP_DTYPES[spec["dtype"]], (x.dtype, spec)
            args.append(tvm.runtime.tensor(np.ascontiguousarray(x)))
        outs = []
        for ref in self.outputs:
            info = self.info(ref)
            fill = np.nan if info["dtype"] == "float32" else 77
            outs.append(tvm.runtime.tensor(np.full(info["shape"], fill, NP_DTYPES[info["dtype"]])))
        mod[self.symbol](*args, *outs)
        return [o.numpy() for o in outs]


def f32(v):
    if isinstance(v, list):
        return [f32(x) for x in v]
    if isinstance(v, float):
        return float(np.float32(v))
    return v


def qname(base, bias=False, add=False, act=None):
    return "onednn.q" + base + ("_bias" if bias else "") + ("_add" if add else "") + (
        "_" + act if act else "")


# ---------------------------------------------------------------- the reference


def effective_weights(w, rounding):
    w = w.astype(np.float64)
    if rounding == "none":
        return w
    assert rounding in ("onednn_halved", "runtime_halved"), rounding
    return 2 * np.rint(w / 2)


def requantize(y, dtype, scale, zero_point=0):
    if dtype == "float32":
        return y
    lo, hi = LIMITS[dtype]
    return np.clip(np.rint(y / scale + zero_point), lo, hi)  # oneDNN adds zp, then rounds


def real(q, scale, zero_point=0):
    return scale * (q.astype(np.float64) - zero_point)


def reference(g: QGraph, inputs, roundings=None, pre_quant=False):
    """Evaluates the document with the doc's semantics. Values are the stored tensors (ints as
    float64 for u8/s8). `pre_quant`: return the node's y before requantization instead."""
    vals = {("input", i): x.astype(np.float64) for i, x in enumerate(inputs)}
    vals.update({("const", i): v for i, v in enumerate(g.const_values)})
    pre = {}
    for n, node in enumerate(g.nodes):
        op, q, attrs = node["op"], node.get("quant"), node["attrs"]
        if q is None:  # a float32 composite: the same chain without scales
            q = {"src_scale": 1.0, "weight_scales": [1.0]}
            op = op.replace("onednn.", "onednn.q", 1)
        ops = [vals[tuple(r)] for r in node["inputs"]]
        dtypes = [g.info(r)["dtype"] for r in node["inputs"]]
        if op == "onednn.quantize":
            y = ops[0]
            out = requantize(y, node["dtype"], q["dst_scale"], q.get("dst_zero_point", 0))
        elif op == "onednn.dequantize":
            y = out = real(ops[0], q["src_scale"], q.get("src_zero_point", 0))
        elif "pool" in op:
            # pool the stored integers, then rescale: with src_scale == dst_scale the factor is
            # exactly 1 and ties (e.g. an average of 12.5) stay exact for rint
            if op == "onednn.qglobal_avg_pool2d":
                p = global_avg_pool2d(ops[0])
            else:
                kind = "max" if "max" in op else "avg"
                p = pool2d(ops[0], kind, attrs["pool_size"], attrs["strides"], attrs["padding"],
                           attrs.get("dilation", [1, 1]), attrs.get("ceil_mode", False),
                           attrs.get("count_include_pad", False))
            zp_src, zp_dst = q.get("src_zero_point", 0), q.get("dst_zero_point", 0)
            y = q["src_scale"] * (p - zp_src)
            lo, hi = LIMITS[node["dtype"]]
            ratio = q["src_scale"] / q["dst_scale"]
            out = np.clip(np.rint((p - zp_src) * ratio + zp_dst), lo, hi)
        else:
            base = "conv2d" if op.startswith("onednn.qconv2d") else "matmul"
            bias = "_bias" in op
            add = "_add" in op
            act = op.split("_add")[-1] if add else op[len("onednn.q" + base):]
            act = act.replace("_bias", "").lstrip("_") or None
            x = real(ops[0], q["src_scale"], q.get("src_zero_point", 0))
            ws = np.asarray(q["weight_scales"], dtype=np.float64)
            rounding = roundings[n] if roundings else "none"
            w = effective_weights(ops[1], rounding)
            if base == "conv2d":
                w = w * ws.reshape(-1, 1, 1, 1)
                y = conv2d(x, w, ops[2] if bias else None, attrs["strides"], attrs["padding"],
                           attrs["dilation"], attrs["groups"])
            else:
                y = np.matmul(x, w * ws.reshape(1, -1))
                if bias:
                    y = y + ops[2].astype(np.float64)
            if add:
                r = ops[-1]
                y = y + (real(r, q["residual_scale"], q.get("residual_zero_point", 0))
                         if dtypes[-1] != "float32" else r)
            y = activation(y, act, **{k: attrs[k] for k in ("clip_min", "clip_max", "alpha")
                                      if k in attrs})
            out = requantize(y, node["dtype"], q.get("dst_scale"), q.get("dst_zero_point", 0))
        vals[("node", n)] = out
        pre[("node", n)] = y
    table = pre if pre_quant else vals
    return [table[tuple(r)] for r in g.outputs]


def roundings_of(mod):
    return [n["weights_rounding"] for n in kernel_info(mod)]


def assert_q_equal(actual, expected, dtype, steps=1, max_mismatch=0.02, min_distinct=8):
    """Quantized outputs: within `steps` quantization steps, few mismatches, non-trivial."""
    assert actual.dtype == NP_DTYPES[dtype]
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= steps, f"max diff {diff.max()} at {np.argwhere(diff == diff.max())[:5]}"
    assert (diff > 0).mean() <= max_mismatch, f"{(diff > 0).mean():.3%} of the elements differ"
    assert len(np.unique(expected)) >= min_distinct, "degenerate test data"


def assert_f32_close(actual, expected, rtol=1e-4):
    assert actual.dtype == np.float32
    scale = max(np.abs(expected).max(), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)
    assert np.std(expected) > 0, "degenerate test data"


def check_outputs(g, mod, inputs, outs, **kw):
    ref = reference(g, inputs, roundings_of(mod))
    for ref_out, actual, r in zip(ref, outs, g.outputs):
        dtype = g.info(r)["dtype"]
        if dtype == "float32":
            assert_f32_close(actual, ref_out)
        else:
            assert_q_equal(actual, ref_out, dtype, **kw)


# ---------------------------------------------------------------- data


def rng(seed):
    return np.random.default_rng(seed)


def qdata(shape, dtype, seed, lo=None, hi=None):
    """Uniform over the whole u8/s8 range (or [lo, hi])."""
    qlo, qhi = LIMITS[dtype]
    lo = qlo if lo is None else lo
    hi = qhi if hi is None else hi
    return rng(seed).integers(lo, hi + 1, size=shape).astype(NP_DTYPES[dtype])


def qweights(shape, seed, wmax=127):
    return rng(seed).integers(-wmax, wmax + 1, size=shape).astype(np.int8)


def weight_scales(n, seed, per_channel=True):
    if not per_channel:
        return [0.004]
    return [float(s) for s in rng(seed).uniform(0.002, 0.006, size=n).astype(np.float32)]


def dst_scale_for(g, inputs, dtype, headroom=0.9):
    """A dst scale that uses the whole range of `dtype` for the last node (a few saturate)."""
    (y,) = reference(g, inputs, pre_quant=True)[-1:]
    qmax = LIMITS[dtype][1]
    return float(np.float32(np.abs(y).max() / qmax * headroom))


def finalize_dst(g, inputs, dtype):
    """Set the last node's dst_scale (int8 outputs) from the float reference."""
    if dtype != "float32":
        g.nodes[-1]["quant"]["dst_scale"] = 1.0
        g.nodes[-1]["quant"]["dst_scale"] = dst_scale_for(g, inputs, dtype)


def fp32_node(g, op, inputs, shape, **attrs):
    """A float32 composite (no "quant")."""
    ref = g.node(op, inputs, shape, "float32", None, **attrs)
    g.nodes[-1].pop("quant")
    return ref


# ---------------------------------------------------------------- qconv2d


def conv_graph(src="uint8", dst="int8", bias=True, add=False, act=None, res="int8",
               per_channel=True, c=16, o=32, hw=10, k=3, groups=1, strides=(1, 1),
               residual_kind="input", seed=0, wmax=127):
    """One qconv node (plus, for residual_kind="node", a qconv producing the residual)."""
    g = QGraph()
    x = qdata((1, c, hw, hw), src, seed)
    w = qweights((o, c // groups, k, k), seed + 1, wmax)
    pad = k // 2
    attrs = dict(strides=list(strides), padding=[pad] * 4, dilation=[1, 1], groups=groups)
    attrs.update(ACT_ATTRS.get(act, {}))
    oh = (hw + 2 * pad - k) // strides[0] + 1
    oshape = (1, o, oh, oh)
    inputs = [x]
    xin = g.input(x.shape, src)
    operands = [xin, g.const(w)]
    if bias:
        operands.append(g.const(rng(seed + 2).standard_normal(o).astype(np.float32)))
    quant = {"src_scale": 0.02, "src_zero_point": 0,
             "weight_scales": weight_scales(o, seed + 3, per_channel)}
    if add:
        if residual_kind == "input":
            r = (qdata(oshape, res, seed + 4) if res != "float32"
                 else rng(seed + 4).standard_normal(oshape).astype(np.float32))
            operands.append(g.input(oshape, res))
            inputs.append(r)
        else:  # produced inside the region by a 1x1 qconv of the same input (acdb layout)
            wr = qweights((o, c, 1, 1), seed + 5)
            rq = {"src_scale": 0.02, "weight_scales": weight_scales(o, seed + 6)}
            rnode = g.node(qname("conv2d"), [xin, g.const(wr)], (1, o, hw, hw), res, rq,
                           strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1], groups=1)
            if res != "float32":
                rq["dst_scale"] = 1.0
                g.output(rnode)
                rq["dst_scale"] = dst_scale_for(g, inputs, res)
                g.outputs.clear()
            operands.append(rnode)
        if res != "float32":
            rs = (g.nodes[operands[-1][1]]["quant"]["dst_scale"] if operands[-1][0] == "node"
                  else 0.05)
            quant.update(residual_scale=rs, residual_zero_point=0)
    if dst != "float32":
        quant.update(dst_scale=1.0, dst_zero_point=0)
    out = g.node(qname("conv2d", bias, add, act), operands, oshape, dst, quant, **attrs)
    g.output(out)
    finalize_dst(g, inputs, dst)
    return g, inputs


def run_check(g, inputs, **kw):
    mod = g.build()
    outs = g.run(mod, inputs)
    check_outputs(g, mod, inputs, outs, **kw)
    return mod, outs


@pytest.mark.parametrize("act", [None, "relu", "clip"])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_qconv_fusions(bias, add, act):
    g, inputs = conv_graph(src="uint8", dst="int8", bias=bias, add=add, act=act, res="int8")
    mod, _ = run_check(g, inputs)
    info = kernel_info(mod)[-1]
    assert info["op"] == qname("conv2d", bias, add, act)
    assert (info["src_dtype"], info["dst_dtype"]) == ("u8", "s8")
    assert not info["impl"].startswith("ref"), info
    if add:
        assert info["residual"] in ("binary_add", "sum_inplace_copy"), info


@pytest.mark.parametrize("dst", ["uint8", "int8", "float32"])
@pytest.mark.parametrize("src", ["uint8", "int8"])
def test_qconv_src_dst_dtypes(src, dst):
    g, inputs = conv_graph(src=src, dst=dst, bias=True, act="relu" if dst == "uint8" else None)
    mod, _ = run_check(g, inputs)
    info = kernel_info(mod)[-1]
    assert info["src_dtype"] == {"uint8": "u8", "int8": "s8"}[src]
    assert info["dst_dtype"] == {"uint8": "u8", "int8": "s8", "float32": "f32"}[dst]


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("kind", ["dense", "depthwise", "grouped", "strided_7x7", "1x1"])
def test_qconv_shapes_and_weight_scales(kind, per_channel):
    src = "uint8" if kind != "grouped" else "int8"
    kw = {"dense": {}, "depthwise": dict(c=32, o=32, groups=32),
          "grouped": dict(c=16, o=32, groups=4), "strided_7x7": dict(c=3, o=16, k=7, hw=20,
                                                                      strides=(2, 2)),
          "1x1": dict(c=64, o=32, k=1)}[kind]
    g, inputs = conv_graph(src=src, dst="uint8", act="relu", per_channel=per_channel, **kw)
    out_channels = g.nodes[-1]["shape"][1]
    assert len(g.nodes[-1]["quant"]["weight_scales"]) == (out_channels if per_channel else 1)
    mod, _ = run_check(g, inputs)
    info = kernel_info(mod)[-1]
    assert not info["impl"].startswith("ref"), info


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_qconv_activations(act):
    # float32 output: the activation's result is visible unquantized
    g, inputs = conv_graph(src="uint8", dst="float32", bias=True, act=act)
    run_check(g, inputs)


@pytest.mark.parametrize("act", ["sigmoid", "gelu", "hardswish"])
def test_qconv_activations_requantized(act):
    g, inputs = conv_graph(src="int8", dst="int8", bias=True, act=act)
    run_check(g, inputs)


RESIDUAL_CASES = [
    # residual dtype, dst dtype, residual producer -> residual modes (kernel info) allowed.
    # An intermediate residual that dies here is accumulated in place when its element size is
    # dst's (u8 <-> s8 through the sum's data type); a region input is never written: a private
    # copy in dst's layout (sum_inplace_copy, an int8 residual of an f32 dst converted to f32)
    # or binary_add (scaled by eltwise_linear around it for an int8 residual).
    ("uint8", "uint8", "node", {"sum_inplace"}),
    ("int8", "uint8", "node", {"sum_inplace"}),
    ("uint8", "int8", "node", {"sum_inplace"}),
    ("float32", "float32", "node", {"sum_inplace"}),
    ("int8", "float32", "node", {"binary_add", "sum_inplace_copy"}),
    ("float32", "int8", "node", {"binary_add"}),
    ("uint8", "uint8", "input", {"binary_add", "sum_inplace_copy"}),
    ("int8", "float32", "input", {"binary_add", "sum_inplace_copy"}),
    ("float32", "uint8", "input", {"binary_add"}),
]


@pytest.mark.parametrize("res,dst,kind,modes", RESIDUAL_CASES)
def test_qconv_residual_dtypes_and_modes(res, dst, kind, modes):
    g, inputs = conv_graph(src="uint8", dst=dst, bias=True, add=True, act="relu", res=res,
                           residual_kind=kind, c=16, o=16)
    mod, _ = run_check(g, inputs)
    info = kernel_info(mod)[-1]
    assert info["residual"] in modes, info
    assert not info["impl"].startswith("ref"), info
    st = stats(mod)
    for r in st["reorders"]:  # at most the boundary reorders (u8 NCHW input, output)
        assert r["value"].startswith("input") or r["output_index"] >= 0, st


def test_qconv_residual_scale_is_applied():
    """Same data, residual_scale doubled: the reference (and only it) must follow."""
    g, inputs = conv_graph(src="uint8", dst="float32", bias=False, add=True, res="int8",
                           residual_kind="input")
    mod, (out1,) = run_check(g, inputs)
    g.nodes[-1]["quant"]["residual_scale"] *= 2
    mod2, (out2,) = run_check(g, inputs)
    r = inputs[1].astype(np.float64)
    np.testing.assert_allclose(out2 - out1, g.nodes[-1]["quant"]["residual_scale"] / 2 * r,
                               rtol=1e-3, atol=1e-3)


def test_qconv_int8_region_input_and_plain_output():
    """u8 NCHW region input -> one reorder to the conv's layout; f32 output written directly or
    through one reorder; kernel names are the int8 jit ones."""
    g, inputs = conv_graph(src="uint8", dst="float32", bias=True, act="relu")
    mod, _ = run_check(g, inputs)
    st = stats(mod)
    assert st["reorders_per_call"] <= 2, st
    for r in st["reorders"]:
        assert r["value"].startswith("input") or r["output_index"] >= 0, st


# ---------------------------------------------------------------- qmatmul


def matmul_graph(a_shape, n, src="int8", dst="int8", bias=True, add=False, act=None,
                 res="int8", per_channel=True, seed=10, b_batched=False):
    g = QGraph()
    k = a_shape[-1]
    a = qdata(a_shape, src, seed)
    b_shape = (*a_shape[:-2], k, n) if b_batched else (k, n)
    b = qweights(b_shape, seed + 1)
    oshape = (*a_shape[:-1], n)
    inputs = [a]
    operands = [g.input(a.shape, src), g.const(b)]
    if bias:
        operands.append(g.const(rng(seed + 2).standard_normal(n).astype(np.float32)))
    quant = {"src_scale": 0.03, "src_zero_point": 0,
             "weight_scales": weight_scales(n, seed + 3, per_channel)}
    if add:
        r = (qdata(oshape, res, seed + 4) if res != "float32"
             else rng(seed + 4).standard_normal(oshape).astype(np.float32))
        operands.append(g.input(oshape, res))
        inputs.append(r)
        if res != "float32":
            quant.update(residual_scale=0.04, residual_zero_point=0)
    if dst != "float32":
        quant.update(dst_scale=1.0, dst_zero_point=0)
    attrs = ACT_ATTRS.get(act, {})
    g.output(g.node(qname("matmul", bias, add, act), operands, oshape, dst, quant, **attrs))
    finalize_dst(g, inputs, dst)
    return g, inputs


@pytest.mark.parametrize("a_shape", [(6, 40), (1, 64), (2, 5, 40), (2, 2, 3, 40)],
                         ids=["2d", "m1", "batched", "batched4d"])
@pytest.mark.parametrize("src,dst", [("int8", "int8"), ("uint8", "uint8"), ("int8", "float32")])
def test_qmatmul_shapes_and_dtypes(a_shape, src, dst):
    g, inputs = matmul_graph(a_shape, 24, src=src, dst=dst, bias=True,
                             act="relu" if dst == "uint8" else None)
    mod, _ = run_check(g, inputs)
    info = kernel_info(mod)[0]
    assert not info["impl"].startswith("ref"), info


def test_qmatmul_batched_weights():
    g, inputs = matmul_graph((3, 4, 32), 16, b_batched=True)
    run_check(g, inputs)


@pytest.mark.parametrize("res", ["int8", "uint8", "float32"])
@pytest.mark.parametrize("act", [None, "gelu", "clip"])
def test_qmatmul_fusions(res, act):
    g, inputs = matmul_graph((8, 48), 32, src="int8", dst="int8", bias=True, add=True,
                             act=act, res=res)
    mod, _ = run_check(g, inputs)
    assert kernel_info(mod)[0]["residual"] == "binary_add"


@pytest.mark.parametrize("per_channel", [True, False])
def test_qmatmul_weight_scales(per_channel):
    g, inputs = matmul_graph((7, 32), 20, src="uint8", dst="float32", bias=False,
                             per_channel=per_channel)
    run_check(g, inputs)


# ---------------------------------------------------------------- pools


POOLS = {
    "max": ("onednn.qmax_pool2d", dict(pool_size=[3, 3], strides=[2, 2], padding=[1, 1, 1, 1])),
    "avg": ("onednn.qavg_pool2d", dict(pool_size=[2, 2], strides=[2, 2], padding=[0, 0, 0, 0])),
    "avg_pad_ceil": ("onednn.qavg_pool2d",
                     dict(pool_size=[3, 3], strides=[2, 2], padding=[1, 1, 1, 1],
                          ceil_mode=True, count_include_pad=True)),
    "avg_exclude_pad": ("onednn.qavg_pool2d",
                        dict(pool_size=[3, 3], strides=[1, 1], padding=[1, 1, 1, 1])),
    "global": ("onednn.qglobal_avg_pool2d", {}),
}


def pool_out_shape(kind, x_shape):
    if kind == "global":
        return (x_shape[0], x_shape[1], 1, 1)
    from numpy_ref import pool_out_size
    a = POOLS[kind][1]
    hw = [pool_out_size(x_shape[2 + d], a["pool_size"][d], a["strides"][d], a["padding"][d],
                        a["padding"][2 + d], 1, a.get("ceil_mode", False)) for d in range(2)]
    return (x_shape[0], x_shape[1], *hw)


# (max pooling cannot rescale: src_scale != dst_scale is a validation error, tested below)
POOL_CASES = [(kind, rescale) for kind in POOLS for rescale in (False, True)
              if not (kind == "max" and rescale)]


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("kind,rescale", POOL_CASES)
@pytest.mark.parametrize("producer", ["input", "qconv"])
def test_qpools(kind, rescale, dtype, producer):
    op, attrs = POOLS[kind]
    g = QGraph()
    x_shape = (2, 16, 9, 9)
    inputs = []
    if producer == "input":
        x = qdata(x_shape, dtype, 20)
        inputs.append(x)
        data = g.input(x_shape, dtype)
    else:  # an nhwc int8 producer inside the region
        x = qdata((2, 8, 9, 9), "uint8", 21)
        inputs.append(x)
        q = {"src_scale": 0.02, "weight_scales": weight_scales(16, 22), "dst_scale": 1.0}
        data = g.node(qname("conv2d", act="relu" if dtype == "uint8" else None),
                      [g.input(x.shape, "uint8"), g.const(qweights((16, 8, 3, 3), 23))],
                      x_shape, dtype, q, **CONV3)
        g.output(data)
        q["dst_scale"] = dst_scale_for(g, inputs, dtype)
        g.outputs.clear()
    src_scale = 0.05 if producer == "input" else g.nodes[-1]["quant"]["dst_scale"]
    dst_scale = src_scale * (1.37 if rescale else 1.0)
    g.output(g.node(op, [data], pool_out_shape(kind, x_shape), dtype,
                    {"src_scale": src_scale, "src_zero_point": 0, "dst_scale": dst_scale,
                     "dst_zero_point": 0}, **attrs))
    mod = g.build()
    outs = g.run(mod, inputs)
    ref = reference(g, inputs, roundings_of(mod))
    exact = kind == "max" and not rescale and producer == "input"
    if exact:
        np.testing.assert_array_equal(outs[0], ref[0].astype(outs[0].dtype))
    else:
        # qconv producer: its own +-1 steps pass through the pool
        assert_q_equal(outs[0], ref[0], dtype, steps=1 if producer == "input" else 2,
                       max_mismatch=0.02 if producer == "input" else 0.05,
                       min_distinct=4)
    info = kernel_info(mod)[-1]
    assert not info["impl"].startswith("ref"), info
    assert info["src_dtype"] == info["dst_dtype"] == {"uint8": "u8", "int8": "s8"}[dtype]


# ---------------------------------------------------------------- quantize / dequantize


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (6, 10), (4, 8, 3)])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantize_dequantize_exact(dtype, shape):
    """A power-of-two scale makes x / scale exact: every element must match, including exact
    ties (round half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2) and
    saturation."""
    g = QGraph()
    scale = 0.0625
    x = (np.rint(rng(30).standard_normal(shape) * 80) / 2 * scale).astype(np.float32)
    flat = x.reshape(-1)
    flat[:8] = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 100.0, 1e4, -1e4], np.float32) * scale
    qv = g.node("onednn.quantize", [g.input(shape)], shape, dtype, {"dst_scale": scale,
                                                                      "dst_zero_point": 0})
    g.output(qv)
    g.output(g.node("onednn.dequantize", [qv], shape, "float32",
                    {"src_scale": scale, "src_zero_point": 0}))
    mod = g.build()
    q_out, x_out = g.run(mod, [x])
    lo, hi = LIMITS[dtype]
    expected = np.clip(np.rint(x.astype(np.float64) / scale), lo, hi)
    np.testing.assert_array_equal(q_out, expected.astype(q_out.dtype))
    assert list(q_out.reshape(-1)[:8]) == [0, 2, 2, 0, max(-2, lo), 100, hi, lo]
    assert (np.abs(x / scale - np.trunc(x / scale)) == 0.5).sum() > 20  # many real ties
    np.testing.assert_array_equal(x_out, scale * q_out.astype(np.float32))
    for node in kernel_info(mod):
        assert not node["impl"].startswith("ref"), node


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantize_any_scale(dtype):
    g = QGraph()
    scale = f32(0.047)
    x = (rng(31).standard_normal((3, 40, 7)) * 4).astype(np.float32)
    g.output(g.node("onednn.quantize", [g.input(x.shape)], x.shape, dtype, {"dst_scale": scale}))
    (q_out,) = g.run(g.build(), [x])
    lo, hi = LIMITS[dtype]
    expected = np.clip(np.rint(x.astype(np.float64) / scale), lo, hi)
    assert_q_equal(q_out, expected, dtype, steps=1, max_mismatch=0.001)


def test_dequantize_of_region_input():
    g = QGraph()
    q = qdata((3, 4, 5), "int8", 31)
    g.output(g.node("onednn.dequantize", [g.input(q.shape, "int8")], q.shape, "float32",
                    {"src_scale": 0.125}))
    (out,) = g.run(g.build(), [q])
    np.testing.assert_array_equal(out, 0.125 * q.astype(np.float32))


# ---------------------------------------------------------------- a whole int8 region


def chain_graph(seed=40):
    """quantize -> qconv_relu (u8) -> qconv_add_relu (residual: the quantized input)
    -> qglobal_avg_pool -> dequantize."""
    g = QGraph()
    x = (np.abs(rng(seed).standard_normal((1, 32, 12, 12))) * 2).astype(np.float32)
    inputs = [x]
    xin = g.input(x.shape)
    s_in = float(np.float32(x.max() / 255))
    q0 = g.node("onednn.quantize", [xin], x.shape, "uint8", {"dst_scale": s_in,
                                                               "dst_zero_point": 0})
    w1 = qweights((32, 32, 3, 3), seed + 1)
    q1 = {"src_scale": s_in, "weight_scales": weight_scales(32, seed + 2), "dst_scale": 1.0}
    c1 = g.node(qname("conv2d", True, False, "relu"),
                [q0, g.const(w1), g.const(rng(seed + 3).standard_normal(32).astype(np.float32))],
                x.shape, "uint8", q1, **CONV3)
    g.output(c1)
    q1["dst_scale"] = dst_scale_for(g, inputs, "uint8")
    g.outputs.clear()
    w2 = qweights((32, 32, 3, 3), seed + 4)
    q2 = {"src_scale": q1["dst_scale"], "weight_scales": weight_scales(32, seed + 5),
          "residual_scale": s_in, "dst_scale": 1.0}
    c2 = g.node(qname("conv2d", True, True, "relu"),
                [c1, g.const(w2), g.const(rng(seed + 6).standard_normal(32).astype(np.float32)),
                 q0], x.shape, "uint8", q2, **CONV3)
    g.output(c2)
    q2["dst_scale"] = dst_scale_for(g, inputs, "uint8")
    g.outputs.clear()
    s_pool = q2["dst_scale"] / 4
    p = g.node("onednn.qglobal_avg_pool2d", [c2], (1, 32, 1, 1), "uint8",
               {"src_scale": q2["dst_scale"], "dst_scale": s_pool})
    g.output(g.node("onednn.dequantize", [p], (1, 32, 1, 1), "float32", {"src_scale": s_pool}))
    return g, inputs


def test_int8_chain():
    g, inputs = chain_graph()
    mod = g.build()
    (out,) = g.run(mod, inputs)
    st = stats(mod)
    info = kernel_info(mod)
    # quantize writes the first conv's layout, the layouts agree all the way: no reorders
    assert st["reorders_per_call"] == 0, st
    assert info[0]["dst_format"] == info[1]["src_format"]
    assert info[1]["dst_format"] == info[2]["src_format"]
    assert info[2]["dst_format"] == info[3]["src_format"]
    assert info[2]["residual"] == "sum_inplace", info  # into the quantized input's buffer
    assert info[4]["direct_output"], info
    assert [n["src_dtype"] for n in info] == ["f32", "u8", "u8", "u8", "u8"]
    assert [n["dst_dtype"] for n in info] == ["u8", "u8", "u8", "u8", "f32"]
    for node in info:
        assert not node["impl"].startswith("ref"), info
    # The reference recomputes each step from the previous *reference* value, so a +-1 step of
    # an intermediate could propagate; the pooled average absorbs it: at most one step of the
    # pooled value (in real units: s_pool).
    (ref,) = reference(g, inputs, roundings_of(mod))
    s_pool = g.nodes[3]["quant"]["dst_scale"]
    assert np.abs(out - ref).max() <= s_pool * 1.0001, np.abs(out - ref).max() / s_pool
    assert len(np.unique(ref)) > 10
    assert stats(mod)["contexts_created"] == 1


def test_mixed_float32_int8_region():
    """fp32 conv -> quantize -> qconv (u8 -> s8) -> dequantize -> fp32 conv: the boundary ops
    convert dtype and layout in one reorder each (no extra reorders inside the region)."""
    g = QGraph()
    x = rng(50).standard_normal((1, 16, 10, 10)).astype(np.float32)
    w0 = (rng(51).standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    w2 = (rng(52).standard_normal((16, 32, 3, 3)) * 0.1).astype(np.float32)
    c0 = fp32_node(g, "onednn.conv2d_relu", [g.input(x.shape), g.const(w0)], (1, 32, 10, 10),
                   **CONV3)
    g.output(c0)
    (y0,) = reference(g, [x])
    g.outputs.clear()
    s0 = f32(y0.max() / 255)
    q0 = g.node("onednn.quantize", [c0], y0.shape, "uint8", {"dst_scale": s0})
    q1 = {"src_scale": s0, "weight_scales": weight_scales(32, 53), "dst_scale": 1.0}
    c1 = g.node(qname("conv2d", True), [q0, g.const(qweights((32, 32, 3, 3), 54)),
                                       g.const(rng(55).standard_normal(32).astype(np.float32))],
                y0.shape, "int8", q1, **CONV3)
    g.output(c1)
    q1["dst_scale"] = dst_scale_for(g, [x], "int8")
    g.outputs.clear()
    d = g.node("onednn.dequantize", [c1], y0.shape, "float32", {"src_scale": q1["dst_scale"]})
    g.output(fp32_node(g, "onednn.conv2d", [d, g.const(w2)], (1, 16, 10, 10), **CONV3))
    mod = g.build()
    (out,) = g.run(mod, [x])
    info = kernel_info(mod)
    st = stats(mod)
    assert info[1]["dst_format"] == info[2]["src_format"], info  # quantize writes qconv's layout
    assert info[3]["dst_format"] == info[4]["src_format"], info  # dequantize: fp32 conv's
    assert info[1]["src_format"] == info[0]["dst_format"], info
    for r in st["reorders"]:
        assert r["value"].startswith("input") or r["output_index"] >= 0, st
    (ref,) = reference(g, [x], roundings_of(mod))
    # one step of the int8 intermediate is q1.dst_scale; through the last conv that is at most
    # sum|w2| * step per output (a loose bound; the typical error is far smaller)
    step = q1["dst_scale"] * np.abs(w2).sum(axis=(1, 2, 3)).max()
    assert np.abs(out - ref).max() <= step, (np.abs(out - ref).max(), step)
    assert np.abs(out - ref).mean() <= 0.05 * step


def test_int8_chain_repeated_and_concurrent_calls():
    g, inputs = chain_graph(seed=41)
    mod = g.build()
    (first,) = g.run(mod, inputs)
    results, errors = [], []

    def worker():
        try:
            for _ in range(5):
                results.append(g.run(mod, inputs)[0])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results:
        np.testing.assert_array_equal(r, first)
    st = stats(mod)
    assert st["calls"] == 21
    assert 1 <= st["contexts_created"] <= 4
    assert st["contexts_free"] == st["contexts_created"]


def test_int8_save_load_round_trip():
    g, inputs = chain_graph(seed=42)
    mod = g.build()
    (expected,) = g.run(mod, inputs)
    loaded = _ffi_api.load_from_bytes(_ffi_api.save_to_bytes(mod))
    tensors = [tvm.runtime.tensor(v) for v in g.const_values]
    loaded["__init_" + g.symbol](tensors)
    (out,) = g.run(loaded, inputs)
    np.testing.assert_array_equal(out, expected)


def test_int8_weights_packed_once():
    g, inputs = chain_graph(seed=43)
    mod = g.build()
    for _ in range(3):
        g.run(mod, inputs)
    st = stats(mod)
    assert st["init_reorders"] >= 2  # both int8 weights packed at init
    assert st["calls"] == 3 and st["contexts_created"] == 1


# ---------------------------------------------------------------- the saturation guard


@pytest.fixture
def guard_mode():
    yield _ffi_api.set_int8_saturation_guard
    _ffi_api.set_int8_saturation_guard(-1)


def test_guard_defaults_follow_the_isa():
    info = _ffi_api.get_int8_saturation_guard()
    isa = _ffi_api.cpu_isa()
    assert info["mode"] == -1
    assert info["vnni"] == (isa not in ("sse41", "avx", "avx2", "avx512_core"))
    assert info["active"] == (not info["vnni"])
    with pytest.raises(ValueError, match="mode must be"):
        _ffi_api.set_int8_saturation_guard(2)
    assert _ffi_api.get_int8_saturation_guard()["mode"] == -1


def test_guard_on_halves_weights_everywhere(guard_mode):
    guard_mode(1)
    g, inputs = conv_graph(src="uint8", dst="int8", bias=True, act="relu")
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["runtime_halved"]
    g, inputs = matmul_graph((6, 40), 24, src="int8", dst="int8")
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["runtime_halved"]
    # s8-source convs: oneDNN halves them itself without VNNI, the runtime with VNNI
    g, inputs = conv_graph(src="int8", dst="int8", bias=True)
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["runtime_halved" if vnni() else "onednn_halved"]


def test_guard_leaves_small_weights_and_u8_depthwise_exact(guard_mode):
    guard_mode(1)
    g, inputs = conv_graph(src="uint8", dst="int8", bias=True, wmax=64)
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["none"]  # 255 * 64 * 2 fits s16
    g, inputs = conv_graph(src="uint8", dst="uint8", act="relu", c=32, o=32, groups=32)
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["none"]


def test_guard_off_is_exact_for_7bit_data(guard_mode):
    guard_mode(0)
    g, inputs = conv_graph(src="uint8", dst="int8", bias=True)
    inputs[0] = inputs[0] // 2  # u8 activations in [0, 127]: no s16 saturation possible
    g.nodes[-1]["quant"]["dst_scale"] = dst_scale_for(g, inputs, "int8")
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["none"]


def pair_bounded_weights(shape, axis, first=127, shift=0):
    """Weights at the s16 limit along `axis`: |w| = first, 128 - first, 128 - first, first, ...

    Neighbours (2k, 2k + 1) along `axis` sum to exactly 128 (255 * 128 fits s16), while any
    other pairing (2k + 1, 2k + 2), or along another axis, meets two large values and would
    saturate with u8 data of 255: the runtime is exact here only if oneDNN pairs as assumed.
    """
    pattern = np.array([first, 128 - first, 128 - first, first], dtype=np.int8)
    index = (np.arange(shape[axis]) + shift) % 4
    view = [1] * len(shape)
    view[axis] = -1
    return np.broadcast_to(pattern[index].reshape(view), shape).copy()


PAIR_CONVS = {  # name: conv_graph arguments
    "conv3x3": dict(c=64, k=3),
    "conv1x1": dict(c=64, k=1),
    "conv3x3_strided": dict(c=64, k=3, strides=(2, 2)),
    "conv7x7_c6": dict(c=6, k=7),  # few input channels, as in a first layer
}
PAIR_GRAPHS = [*PAIR_CONVS, "matmul_u8", "matmul_s8"]


def pair_graph(graph, shift=0):
    """A conv / matmul with pair-bounded weights (shifted by `shift`) and the largest data."""
    if graph in PAIR_CONVS:
        g, inputs = conv_graph(src="uint8", dst="float32", bias=False, o=32, **PAIR_CONVS[graph])
        axis, src = 1, "uint8"
    else:
        src = {"u8": "uint8", "s8": "int8"}[graph[-2:]]
        g, inputs = matmul_graph((6, 64), 24, src=src, dst="float32", bias=False)
        axis = 0
    g.const_values[0][:] = pair_bounded_weights(g.const_values[0].shape, axis, shift=shift)
    inputs[0][:] = LIMITS[src][1]  # u8 255; s8 127, which gemm shifts by +128 to u8 255
    return g, inputs


@pytest.mark.parametrize("graph", PAIR_GRAPHS)
def test_guard_keeps_pair_bounded_weights_exact(graph):
    """Pair sums <= 128 along the reduction axis need no halving, even with |w| = 127."""
    g, inputs = pair_graph(graph)
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["none"]


@pytest.mark.skipif(vnni(), reason="VNNI accumulates u8 x s8 in s32 directly")
@pytest.mark.parametrize("graph", PAIR_GRAPHS)
def test_without_guard_misaligned_pairs_saturate(guard_mode, graph):
    """The control of the test above: shifted by one along the axis, the pairs saturate."""
    guard_mode(0)
    g, inputs = pair_graph(graph, shift=1)
    mod = g.build()
    (out,) = g.run(mod, inputs)
    (ref,) = reference(g, inputs, roundings_of(mod))
    assert np.abs(out - ref).max() > 0.1 * np.abs(ref).max()


def test_guard_halves_when_a_pair_exceeds_128():
    g, inputs = conv_graph(src="uint8", dst="float32", bias=False, c=64, o=32, k=1)
    g.const_values[0][:] = pair_bounded_weights(g.const_values[0].shape, axis=1, first=100)
    g.const_values[0][3, 2, 0, 0] = 29  # this pair sums to 129
    mod, _ = run_check(g, inputs)
    assert roundings_of(mod) == ["none" if vnni() else "runtime_halved"]


@pytest.mark.skipif(vnni(), reason="VNNI accumulates u8 x s8 in s32 directly")
def test_without_guard_full_range_u8_saturates_on_this_cpu(guard_mode):
    """Why the guard exists: oneDNN's non-VNNI kernels saturate u8 x s8 pair sums to s16."""
    guard_mode(0)
    g, inputs = conv_graph(src="uint8", dst="float32", bias=False, c=64, o=32, k=1)
    inputs[0][:] = 255
    g.const_values[0][:] = 127
    mod = g.build()
    (out,) = g.run(mod, inputs)
    (ref,) = reference(g, inputs, roundings_of(mod))
    assert roundings_of(mod) == ["none"]
    assert np.abs(out - ref).max() > 0.1 * np.abs(ref).max()
    guard_mode(-1)
    mod = g.build()
    (out,) = g.run(mod, inputs)
    (ref,) = reference(g, inputs, roundings_of(mod))
    assert roundings_of(mod) == ["runtime_halved"]
    assert_f32_close(out, ref)  # per-channel scales: the output varies over channels


# ---------------------------------------------------------------- kernel names


def test_kernel_info_names_int8_implementations():
    g, _ = chain_graph()
    mod = g.build()
    info = kernel_info(mod)
    impls = [n["impl"] for n in info]
    for impl in impls:
        assert impl and not impl.startswith("ref"), impls
    # the conv kernels are int8 ones (oneDNN names e.g. jit_uni_int8:avx2, brgconv:avx512_core_amx)
    for n in info[1:3]:  # e.g. jit_uni_int8:avx2 (AVX2), brgconv:avx512_core_amx (AMX)
        assert "int8" in n["impl"] or "brg" in n["impl"] or "x8s8" in n["impl"], n
        assert n["weights_format"] and n["weights_format"] != "abcd", n  # packed at init
    assert info[1]["src_dtype"] == "u8" and info[1]["dst_dtype"] == "u8"


# ---------------------------------------------------------------- validation


def small_qconv():
    g, _ = conv_graph(src="uint8", dst="int8", bias=True, add=True, act="relu",
                      res="int8", c=8, o=8, hw=6)
    return g


def _error(mutate, match, graph=small_qconv):
    doc = copy.deepcopy(graph().doc())
    mutate(doc)
    with pytest.raises(ValueError, match=match):
        _ffi_api.create_module(json.dumps(doc))


def _q(d):
    return d["nodes"][-1]["quant"]


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["nodes"][-1].pop("quant"),
     r'node 0 \(onednn.qconv2d_bias_add_relu\): is missing required field "quant"'),
    (lambda d: _q(d).pop("src_scale"), 'quant is missing required field "src_scale"'),
    (lambda d: _q(d).pop("weight_scales"), 'quant is missing required field "weight_scales"'),
    (lambda d: _q(d).pop("dst_scale"),
     r'quant is missing required field "dst_scale" \(the output is int8\)'),
    (lambda d: _q(d).pop("residual_scale"),
     r'quant is missing required field "residual_scale" \(the residual is int8\)'),
    (lambda d: _q(d).update(src_scale=0), "quant.src_scale must be a positive finite float32"),
    (lambda d: _q(d).update(src_scale=-0.5), "quant.src_scale must be a positive finite"),
    (lambda d: _q(d).update(dst_scale=float("nan")), "quant.dst_scale must be a positive"),
    (lambda d: _q(d).update(dst_scale=float("inf")), "quant.dst_scale must be a positive"),
    (lambda d: _q(d).update(dst_scale="0.1"), "quant.dst_scale must be a number, got string"),
    (lambda d: _q(d).update(src_scale=1e-60), "outside the normal float32 range"),
    (lambda d: _q(d)["weight_scales"].__setitem__(3, -1.0),
     r"quant.weight_scales\[3\] must be a positive"),
    (lambda d: _q(d).update(weight_scales=[0.1, 0.2]),
     r"quant.weight_scales has 2 entries, expected 1 \(per tensor\) or 8"),
    (lambda d: _q(d).update(weight_scales=[]), "quant.weight_scales must not be empty"),
    (lambda d: _q(d).update(weight_scales=0.1), "quant.weight_scales must be a JSON array"),
    (lambda d: _q(d).update(src_zero_point=256),
     r"quant.src_zero_point = 256 is outside the range of uint8 \[0, 255\]"),
    (lambda d: _q(d).update(dst_zero_point=-129),
     r"quant.dst_zero_point = -129 is outside the range of int8 \[-128, 127\]"),
    (lambda d: _q(d).update(residual_zero_point=128),
     r"quant.residual_zero_point = 128 is outside the range of int8"),
    (lambda d: _q(d).update(src_zero_point=1.5), "quant.src_zero_point must be an integer"),
    (lambda d: _q(d).update(dst_scales=0.1), 'unknown quant field "dst_scales"'),
    (lambda d: d["nodes"][-1].update(quant=[1, 2]), '"quant" must be a JSON object'),
    (lambda d: d["constants"][0].update(dtype="uint8"),
     r"weight \(const 0 .*\) has dtype 'uint8', expected 'int8'"),
    (lambda d: d["constants"][0].update(dtype="float32"),
     r"weight \(const 0 .*\) has dtype 'float32', expected 'int8'"),
    (lambda d: d["constants"][1].update(dtype="int8"),
     r"bias \(const 1 .*\) has dtype 'int8', expected 'float32'"),
    (lambda d: d["inputs"][0].update(dtype="float32"),
     r"data \(input 0\) has dtype 'float32', expected 'uint8' or 'int8'"),
    (lambda d: d["inputs"][0].update(dtype="int32"), "dtype 'int32'.*not supported yet"),
    (lambda d: d["nodes"][-1].update(dtype="int32"), "dtype 'int32'.*not supported yet"),
    (lambda d: d["inputs"][1].update(dtype="float32"),
     "quant.residual_scale is given, but the residual is float32"),
    (lambda d: d["nodes"][-1].update(dtype="float32"),
     "quant.dst_scale is given, but the output is float32"),
    (lambda d: (d["nodes"][-1]["inputs"].__setitem__(1, ["input", 1]),
                d["inputs"][1].update(shape=[8, 8, 3, 3], dtype="int8")),
     r"weight \(input 1\) must be a constant"),
    (lambda d: d["nodes"][-1].update(op="onednn.conv2d_bias_add_relu"),
     r"has a \"quant\" field, but onednn.conv2d_bias_add_relu is a float32 op"),
    (lambda d: d["nodes"][-1].update(op="onednn.qconv2d_bias_relu", inputs=d["nodes"][-1][
        "inputs"][:3]), 'unknown quant field "residual_scale" for onednn.qconv2d_bias_relu'),
])
def test_invalid_int8_documents(mutate, match):
    _error(mutate, match)


def _fp32_conv_with_int8_output():
    g = QGraph()
    g.output(fp32_node(g, "onednn.conv2d", [g.input((1, 4, 5, 5)), g.const(
        np.zeros((4, 4, 1, 1), np.float32))], (1, 4, 5, 5), strides=[1, 1],
        padding=[0, 0, 0, 0], dilation=[1, 1], groups=1))
    g.nodes[0]["dtype"] = "uint8"
    return g


def _pool_graph():
    g = QGraph()
    g.output(g.node("onednn.qmax_pool2d", [g.input((1, 4, 6, 6), "uint8")], (1, 4, 3, 3),
                    "uint8", {"src_scale": 0.1, "dst_scale": 0.1}, pool_size=[2, 2],
                    strides=[2, 2], padding=[0, 0, 0, 0]))
    return g


def _boundary_graph():
    g = QGraph()
    q = g.node("onednn.quantize", [g.input((2, 3))], (2, 3), "int8", {"dst_scale": 0.1})
    g.output(g.node("onednn.dequantize", [q], (2, 3), "float32", {"src_scale": 0.1}))
    return g


@pytest.mark.parametrize("graph,mutate,match", [
    (_fp32_conv_with_int8_output, lambda d: None,
     "output dtype 'uint8' is not supported by the float32 op onednn.conv2d"),
    (_pool_graph, lambda d: d["nodes"][0].update(dtype="int8"),
     "output dtype 'int8' differs from the data dtype 'uint8'"),
    (_pool_graph, lambda d: d["nodes"][0]["quant"].pop("dst_scale"),
     'quant is missing required field "dst_scale"'),
    (_pool_graph, lambda d: d["nodes"][0]["quant"].update(weight_scales=[1.0]),
     'unknown quant field "weight_scales" for onednn.qmax_pool2d'),
    (_pool_graph, lambda d: d["nodes"][0]["quant"].update(dst_scale=0.2),
     r"quant.src_scale \(0.1\) and quant.dst_scale \(0.2\) must be equal for int8 max pooling"),
    (_pool_graph, lambda d: d["inputs"][0].update(dtype="float32"),
     r"data \(input 0\) has dtype 'float32', expected 'uint8' or 'int8'"),
    (_boundary_graph, lambda d: d["nodes"][0]["quant"].pop("dst_scale"),
     r'node 0 \(onednn.quantize\): quant is missing required field "dst_scale"'),
    (_boundary_graph, lambda d: d["nodes"][0].update(dtype="float32"),
     "output dtype 'float32' must be 'uint8' or 'int8' for quantize"),
    (_boundary_graph, lambda d: d["nodes"][1].update(dtype="int8"),
     "output dtype 'int8' must be 'float32' for dequantize"),
    (_boundary_graph, lambda d: d["nodes"][1]["quant"].update(src_zero_point=200),
     r"node 1 \(onednn.dequantize\): quant.src_zero_point = 200 is outside the range of int8"),
    (_pool_graph, lambda d: d["nodes"][0]["quant"].update(dst_zero_point=3),
     r"quant.src_zero_point \(0\) and quant.dst_zero_point \(3\) must be equal for int8 max"),
    (_boundary_graph, lambda d: d["nodes"][1]["quant"].update(dst_scale=0.1),
     'unknown quant field "dst_scale" for onednn.dequantize'),
    (_boundary_graph, lambda d: d["nodes"][1].update(shape=[3, 2]),
     r"declared output shape \[3,2\] does not match the shape \[2,3\]"),
    (_boundary_graph, lambda d: d["nodes"][1]["inputs"].__setitem__(0, ["input", 0]),
     r"data \(input 0\) has dtype 'float32', expected 'uint8' or 'int8'"),
])
def test_invalid_int8_documents_other_ops(graph, mutate, match):
    _error(mutate, match, graph)


def test_supported_composites_list_int8_names():
    names = set(_ffi_api.supported_composites())
    for name in ["onednn.qconv2d", "onednn.qconv2d_bias_add_relu", "onednn.qmatmul_bias_gelu_tanh",
                 "onednn.qconv2d_add_leaky_relu", "onednn.qmax_pool2d", "onednn.qavg_pool2d",
                 "onednn.qglobal_avg_pool2d", "onednn.quantize", "onednn.dequantize"]:
        assert name in names
    assert "onednn.qconv2d_relu_bias" not in names
    assert sum(n.startswith("onednn.qconv2d") for n in names) == 40
    assert sum(n.startswith("onednn.qmatmul") for n in names) == 40
