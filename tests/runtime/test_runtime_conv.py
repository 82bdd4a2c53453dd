"""conv2d composites vs numpy: shapes/attrs x every post-op combination, both residual paths."""

import itertools

import numpy as np
import pytest
import tvm

from numpy_ref import activation, conv2d
from runtime_utils import (ACT_ATTRS, ACTIVATIONS, Subgraph, assert_close, composite,
                           kernel_info, rand, run_graph)

# name: (N, C, H, W, O, KH, KW, strides, padding, dilation, groups)
CONFIGS = {
    "basic": (1, 8, 10, 10, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "pointwise": (1, 32, 7, 7, 64, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "groups": (1, 8, 9, 9, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
    "depthwise": (1, 16, 12, 12, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16),
    "depthwise_s2": (2, 24, 13, 13, 24, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 24),
    "stride2": (1, 16, 15, 15, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "asym_pad": (1, 8, 11, 9, 16, 3, 3, (1, 1), (0, 1, 2, 0), (1, 1), 1),
    "dilation": (1, 8, 14, 14, 16, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1),
    "rect_kernel_batch": (2, 4, 10, 12, 8, 3, 1, (2, 1), (1, 0, 1, 0), (1, 1), 1),
    "first_layer": (1, 3, 32, 32, 16, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
}


def out_shape(cfg):
    n, c, h, w, o, kh, kw, s, p, d, g = cfg
    oh = (h + p[0] + p[2] - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (w + p[1] + p[3] - d[1] * (kw - 1) - 1) // s[1] + 1
    return (n, o, oh, ow)


def build_single(cfg, bias, add, act, seed=0):
    n, c, h, w, o, kh, kw, s, p, d, g = cfg
    oshape = out_shape(cfg)
    x = rand(n, c, h, w, seed=seed)
    wt = rand(o, c // g, kh, kw, seed=seed + 1, scale=0.2)
    b = rand(o, seed=seed + 2)
    r = rand(*oshape, seed=seed + 3)
    sg = Subgraph()
    xi = sg.input(x.shape)
    ops = [xi, sg.const(wt)]
    if bias:
        ops.append(sg.const(b))
    if add:
        ops.append(sg.input(oshape))
    attrs = dict(strides=list(s), padding=list(p), dilation=list(d), groups=g)
    attrs.update(ACT_ATTRS.get(act, {}))
    sg.output(sg.node(composite("conv2d", bias, add, act), ops, oshape, **attrs))
    ref = conv2d(x, wt, b if bias else None, s, p, d, g)
    if add:
        ref = ref + r
    ref = activation(ref, act, **ACT_ATTRS.get(act, {}))
    inputs = [x, r] if add else [x]
    return sg, inputs, ref


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("bias,add,act", [(False, False, None), (True, False, "relu"),
                                          (True, True, "relu")])
def test_conv_configs(name, bias, add, act):
    sg, inputs, ref = build_single(CONFIGS[name], bias, add, act)
    (out,) = run_graph(sg, inputs)
    assert_close(out, ref)


@pytest.mark.parametrize("bias,add,act",
                         list(itertools.product([False, True], [False, True], [None] + ACTIVATIONS)))
def test_conv_post_op_combinations(bias, add, act):
    sg, inputs, ref = build_single(CONFIGS["basic"], bias, add, act, seed=5)
    mod = sg.build()
    args = [tvm.runtime.tensor(x) for x in inputs]
    out = tvm.runtime.tensor(np.zeros(sg.output_shapes()[0], "float32"))
    mod[sg.symbol](*args, out)
    assert_close(out.numpy(), ref)
    for arg, x in zip(args, inputs):
        np.testing.assert_array_equal(arg.numpy(), x)  # inputs are never written
    info = kernel_info(mod)[0]
    # the residual is a region input: binary_add, or sum into a private reordered copy
    assert info["residual"] in (("binary_add", "sum_inplace_copy") if add else ("none",))
    assert not info["impl"].startswith("ref"), info  # post-ops keep the jit kernel


def test_conv_bias_as_4d_vector():
    cfg = CONFIGS["basic"]
    n, c, h, w, o, kh, kw, s, p, d, g = cfg
    x, wt, b = rand(n, c, h, w), rand(o, c, kh, kw, scale=0.2), rand(o)
    sg = Subgraph()
    sg.output(sg.node("onednn.conv2d_bias", [sg.input(x.shape), sg.const(wt),
                                             sg.const(b.reshape(1, o, 1, 1))],
                      out_shape(cfg), strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1],
                      groups=1))
    (out,) = run_graph(sg, [x])
    assert_close(out, conv2d(x, wt, b, s, p, d, g))


def _residual_chain(act, residual_is_output=False):
    """x -> conv0 -> conv1 -> conv2_add(residual=conv0) ; conv0 dies at conv2."""
    c = 16
    x = rand(1, c, 8, 8, seed=11)
    w0, w1, w2 = (rand(c, c, 3, 3, seed=12 + i, scale=0.1) for i in range(3))
    b2 = rand(c, seed=20)
    sg = Subgraph()
    attrs = dict(strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)
    xi = sg.input(x.shape)
    n0 = sg.node("onednn.conv2d_relu", [xi, sg.const(w0)], x.shape, **attrs)
    n1 = sg.node("onednn.conv2d", [n0, sg.const(w1)], x.shape, **attrs)
    n2 = sg.node(composite("conv2d", True, True, act), [n1, sg.const(w2), sg.const(b2), n0],
                 x.shape, **attrs, **ACT_ATTRS.get(act, {}))
    sg.output(n2)
    if residual_is_output:
        sg.output(n0)
    r0 = np.maximum(conv2d(x, w0, None, (1, 1), (1, 1, 1, 1)), 0)
    r1 = conv2d(r0, w1, None, (1, 1), (1, 1, 1, 1))
    r2 = activation(conv2d(r1, w2, b2, (1, 1), (1, 1, 1, 1)) + r0, act,
                    **ACT_ATTRS.get(act, {}))
    return sg, [x], [r2, r0]


@pytest.mark.parametrize("act", [None, "relu", "silu"])
def test_residual_inplace_sum(act):
    sg, inputs, refs = _residual_chain(act)
    mod = sg.build()
    (out,) = run_graph(sg, inputs, mod)
    assert_close(out, refs[0])
    info = kernel_info(mod)
    assert info[2]["residual"] == "sum_inplace", info
    # repeated calls reuse the buffers and stay correct
    (out2,) = run_graph(sg, inputs, mod)
    np.testing.assert_array_equal(out, out2)


def test_residual_binary_when_residual_is_region_output():
    sg, inputs, refs = _residual_chain("relu", residual_is_output=True)
    mod = sg.build()
    out, r0 = run_graph(sg, inputs, mod)
    assert_close(out, refs[0])
    assert_close(r0, refs[1])  # the residual value was not clobbered
    assert kernel_info(mod)[2]["residual"] == "binary_add"


def test_residual_binary_when_residual_used_later():
    """conv0 is the residual of node 2 and also read by node 3: no in-place."""
    c = 8
    x = rand(1, c, 6, 6, seed=3)
    ws = [rand(c, c, 1, 1, seed=30 + i, scale=0.3) for i in range(4)]
    attrs = dict(strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1], groups=1)
    sg = Subgraph()
    xi = sg.input(x.shape)
    n0 = sg.node("onednn.conv2d", [xi, sg.const(ws[0])], x.shape, **attrs)
    n1 = sg.node("onednn.conv2d", [n0, sg.const(ws[1])], x.shape, **attrs)
    n2 = sg.node("onednn.conv2d_add", [n1, sg.const(ws[2]), n0], x.shape, **attrs)
    n3 = sg.node("onednn.conv2d_add", [n0, sg.const(ws[3]), n2], x.shape, **attrs)
    sg.output(n3)
    mod = sg.build()
    (out,) = run_graph(sg, [x], mod)

    def cv(a, w):
        return conv2d(a, w)

    r0 = cv(x, ws[0])
    r2 = cv(cv(r0, ws[1]), ws[2]) + r0
    r3 = cv(r0, ws[3]) + r2
    assert_close(out, r3)
    info = kernel_info(mod)
    assert info[2]["residual"] == "binary_add"
    assert info[3]["residual"] == "sum_inplace"


def test_conv_residual_same_value_as_data():
    """conv(x) + x where x is internal: the residual is also the conv's src -> not in place."""
    c = 8
    x = rand(1, c, 6, 6, seed=4)
    w0, w1 = rand(c, c, 3, 3, seed=40, scale=0.2), rand(c, c, 3, 3, seed=41, scale=0.2)
    attrs = dict(strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)
    sg = Subgraph()
    n0 = sg.node("onednn.conv2d", [sg.input(x.shape), sg.const(w0)], x.shape, **attrs)
    sg.output(sg.node("onednn.conv2d_add_relu", [n0, sg.const(w1), n0], x.shape, **attrs))
    mod = sg.build()
    (out,) = run_graph(sg, [x], mod)
    r0 = conv2d(x, w0, None, (1, 1), (1, 1, 1, 1))
    assert_close(out, np.maximum(conv2d(r0, w1, None, (1, 1), (1, 1, 1, 1)) + r0, 0))
    assert kernel_info(mod)[1]["residual"] == "binary_add"
