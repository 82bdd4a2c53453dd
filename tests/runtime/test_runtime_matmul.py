"""matmul composites vs numpy: 2-D, batched a x 2-D b, batched runtime b, post-op combos."""

import itertools

import numpy as np
import pytest

from numpy_ref import activation
from runtime_utils import (ACT_ATTRS, ACTIVATIONS, Subgraph, assert_close, composite,
                           kernel_info, rand, run_graph)


def build(a_shape, b_shape, bias, add, act, b_const=True, seed=0):
    a = rand(*a_shape, seed=seed)
    b = rand(*b_shape, seed=seed + 1, scale=0.2)
    n = b_shape[-1]
    oshape = tuple(a_shape[:-1]) + (n,)
    bias_v = rand(n, seed=seed + 2)
    r = rand(*oshape, seed=seed + 3)
    sg = Subgraph()
    ops = [sg.input(a.shape)]
    inputs = [a]
    if b_const:
        ops.append(sg.const(b))
    else:
        ops.append(sg.input(b.shape))
        inputs.append(b)
    if bias:
        ops.append(sg.const(bias_v))
    if add:
        ops.append(sg.input(oshape))
        inputs.append(r)
    sg.output(sg.node(composite("matmul", bias, add, act), ops, oshape,
                      **ACT_ATTRS.get(act, {})))
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    if bias:
        ref = ref + bias_v
    if add:
        ref = ref + r
    ref = activation(ref, act, **ACT_ATTRS.get(act, {}))
    return sg, inputs, ref


SHAPES = {
    "2d": ((5, 24), (24, 16)),
    "2d_m1": ((1, 64), (64, 10)),
    "batched_a_2d_b": ((2, 3, 7, 32), (32, 12)),
    "batched_runtime_b": ((3, 6, 16), (3, 16, 9)),
    "batched4d_runtime_b": ((2, 2, 5, 8), (2, 2, 8, 6)),
}


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("b_const", [True, False])
@pytest.mark.parametrize("bias,add,act", [(False, False, None), (True, False, "gelu"),
                                          (True, True, "relu")])
def test_matmul_shapes(name, b_const, bias, add, act):
    a_shape, b_shape = SHAPES[name]
    sg, inputs, ref = build(a_shape, b_shape, bias, add, act, b_const=b_const)
    (out,) = run_graph(sg, inputs)
    assert_close(out, ref)


@pytest.mark.parametrize("bias,add,act",
                         list(itertools.product([False, True], [False, True], [None] + ACTIVATIONS)))
def test_matmul_post_op_combinations(bias, add, act):
    sg, inputs, ref = build((4, 10, 32), (32, 24), bias, add, act, seed=9)
    mod = sg.build()
    (out,) = run_graph(sg, inputs, mod)
    assert_close(out, ref)
    assert not kernel_info(mod)[0]["impl"].startswith("ref")


def test_matmul_chain_inplace_residual_and_attention_like():
    """q = x Wq ; kt = xt q (runtime a, b) ; s = relu(q kt) ; y = s Wo + bo + q ; z = y Wq + y."""
    x = rand(8, 16, seed=1)
    wq, wk, wo = (rand(16, 16, seed=2 + i, scale=0.3) for i in range(3))
    bo = rand(16, seed=9)
    sg = Subgraph()
    xi = sg.input(x.shape)
    q = sg.node("onednn.matmul", [xi, sg.const(wq)], (8, 16))
    kt = sg.node("onednn.matmul", [sg.input((16, 8)), q], (16, 16))  # runtime a and b
    s = sg.node("onednn.matmul_relu", [q, kt], (8, 16))
    y = sg.node("onednn.matmul_bias_add", [s, sg.const(wo), sg.const(bo), q], (8, 16))
    z = sg.node("onednn.matmul_add", [y, sg.const(wq), y], (8, 16))  # residual also the src
    sg.output(z)
    xt = rand(16, 8, seed=5)
    mod = sg.build()
    (out,) = run_graph(sg, [x, xt], mod)
    f = np.float64
    rq = x.astype(f) @ wq
    rkt = xt.astype(f) @ rq
    rs = np.maximum(rq @ rkt, 0)
    ry = rs @ wo + bo + rq
    rz = ry @ wq + ry
    assert_close(out, rz, rtol=1e-4, atol=2e-4)
    info = kernel_info(mod)
    assert info[3]["residual"] == "sum_inplace"  # q is internal and dies here
    assert info[4]["residual"] == "binary_add"  # y is also read as the src
    assert info[4]["direct_output"]


def test_matmul_bias_2d_vector():
    a, b, bias = rand(3, 8), rand(8, 4), rand(1, 4)
    sg = Subgraph()
    sg.output(sg.node("onednn.matmul_bias", [sg.input(a.shape), sg.const(b), sg.const(bias)],
                      (3, 4)))
    (out,) = run_graph(sg, [a])
    assert_close(out, a.astype(np.float64) @ b + bias)
