"""Transformer ops in the runtime (issue 12): layer_norm, softmax, standalone activations,
broadcast binaries, reshape / transpose views, matmul output_scale and broadcast residuals, and
a whole BERT-style encoder layer (MiniLM shapes) as one region. References are numpy in
float64; tolerances are stated per test.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tvm

from numpy_ref import activation
from runtime_utils import Subgraph, kernel_info, rand, stats
from tvm_onednn import _ffi_api

ELTWISE = ["gelu", "gelu_tanh", "relu", "sigmoid", "tanh", "silu"]
BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply,
          "divide": np.divide, "maximum": np.maximum, "minimum": np.minimum}


# ---------------------------------------------------------------- helpers


def concrete(shape, env):
    return tuple(env[d] if isinstance(d, str) else d for d in shape)


def call(sg, mod, inputs, env=None):
    """Run the region; output shapes come from the declared shapes and the symbol values."""
    env = env or {}
    args = [tvm.runtime.tensor(np.ascontiguousarray(x, dtype="float32")) for x in inputs]
    outs = [tvm.runtime.tensor(np.full(concrete(s, env), np.nan, dtype="float32"))
            for s in sg.output_shapes()]
    mod[sg.symbol](*args, *outs)
    return [o.numpy() for o in outs]


def close(actual, expected, rtol, atol):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64), rtol=rtol,
                               atol=atol)


def layer_norm(x, gamma, beta, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x, axis):
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


def node_ids(sg, op):
    return [i for i, n in enumerate(sg.nodes) if n["op"] == op]


# ---------------------------------------------------------------- single ops


@pytest.mark.parametrize("shape,sym", [((2, 5, 384), None), ((3, 7, 32), ("n", "s", 32)),
                                       ((6, 16), None)])
@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_layer_norm(shape, sym, eps):
    x = rand(*shape, seed=1, scale=3.0) + 0.5
    gamma, beta = rand(shape[-1], seed=2), rand(shape[-1], seed=3)
    sg = Subgraph()
    decl = sym or shape
    sg.output(sg.node("onednn.layer_norm", [sg.input(decl), sg.const(gamma), sg.const(beta)],
                      decl, epsilon=eps))
    mod = sg.build()
    env = dict(zip(decl, shape))
    (out,) = call(sg, mod, [x], env)
    # tolerance: 1e-5 relative (atol 1e-5 for outputs near 0)
    close(out, layer_norm(x, gamma, beta, eps), rtol=1e-5, atol=1e-5)
    assert kernel_info(mod)[0]["impl"] != ""
    if sym:  # another binding through the same module
        x2 = rand(1, 3, 32, seed=4)
        (out2,) = call(sg, mod, [x2], {"n": 1, "s": 3})
        close(out2, layer_norm(x2, gamma, beta, eps), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
@pytest.mark.parametrize("symbolic", [False, True])
def test_softmax_axes(axis, symbolic):
    shape = (2, 3, 7, 5)
    decl = ("n", 3, "s", 5) if symbolic else shape
    x = rand(*shape, seed=5, scale=4.0)
    sg = Subgraph()
    sg.output(sg.node("onednn.softmax", [sg.input(decl)], decl, axis=axis))
    (out,) = call(sg, sg.build(), [x], {"n": 2, "s": 7})
    close(out, softmax(x, axis), rtol=0, atol=1e-6)  # tolerance 1e-6 absolute


def test_softmax_nan_to_zero():
    """A fully masked row (all -inf) is NaN after softmax: nan_to_zero makes it 0, as the
    exporter's where(isnan(s), 0, s); a NaN input poisons its row the same way."""
    x = rand(2, 4, 6, seed=6)
    x[0, 1, :] = -np.inf
    x[1, 2, 3] = np.nan
    x[1, 0, :2] = -np.inf  # partly masked: an ordinary row
    for flag in (False, True):
        sg = Subgraph()
        sg.output(sg.node("onednn.softmax", [sg.input(("n", 4, 6))], ("n", 4, 6), axis=2,
                          nan_to_zero=flag))
        (out,) = call(sg, sg.build(), [x], {"n": 2})
        ref = softmax(x, 2)
        assert np.isnan(ref[0, 1]).all() and np.isnan(ref[1, 2]).all()
        if flag:
            ref = np.where(np.isnan(ref), 0.0, ref)
            assert not np.isnan(out).any()
            assert (out[0, 1] == 0).all() and (out[1, 2] == 0).all()
            close(out, ref, rtol=0, atol=1e-6)
        else:
            assert np.isnan(out[0, 1]).all()
            close(out[0, 0], ref[0, 0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_softmax_nan_to_zero_threaded(threads):
    """Above 16k values the NaN pass is split into one chunk per thread (SIMD, masked stores):
    NaN rows in the first, a middle and the last chunk, and at a length that is no whole
    number of vectors (3 * 7 * 1001 values), all become 0; nothing else changes."""
    x = rand(3, 7, 1001, seed=9)
    x[0, 0, :] = -np.inf
    x[1, 3, 500] = np.nan
    x[2, 6, 1000] = np.nan
    sg = Subgraph()
    sg.output(sg.node("onednn.softmax", [sg.input((3, 7, 1001))], (3, 7, 1001), axis=2,
                      nan_to_zero=True))
    mod = sg.build()
    before = _ffi_api.get_num_threads()
    _ffi_api.set_num_threads(threads)
    try:
        (out,) = call(sg, mod, [x], {})
    finally:
        _ffi_api.set_num_threads(before)
    ref = softmax(x, 2)
    assert np.isnan(ref[0, 0]).all() and np.isnan(ref[1, 3]).all() and np.isnan(ref[2, 6]).all()
    assert (out[0, 0] == 0).all() and (out[1, 3] == 0).all() and (out[2, 6] == 0).all()
    close(out, np.where(np.isnan(ref), 0.0, ref), rtol=0, atol=1e-6)  # tolerance 1e-6 absolute


@pytest.mark.parametrize("act", ELTWISE)
def test_eltwise(act):
    shape = (2, 7, 24)
    x = rand(*shape, seed=7, scale=3.0)
    for decl in (shape, ("n", "s", 24)):
        sg = Subgraph()
        sg.output(sg.node("onednn." + act, [sg.input(decl)], decl))
        (out,) = call(sg, sg.build(), [x], {"n": 2, "s": 7})
        close(out, activation(x, act), rtol=1e-6, atol=1e-6)  # tolerance 1e-6 (rel + abs)


BROADCAST = [
    ((2, 3, 8), (2, 3, 8)),        # same shape
    ((2, 3, 8), (8,)),             # b broadcasts (bias-like)
    ((8,), (2, 3, 8)),             # a broadcasts: operands swapped (or expanded for divide)
    ((2, 1, 8), (1, 3, 1)),        # both broadcast: a expanded once
    ((2, 3, 1), (2, 3, 8)),        # a broadcasts along the last dim
    ((4, 1, 5, 5), (4, 12, 5, 5)),  # attention-mask-like
]


@pytest.mark.parametrize("shapes", BROADCAST, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op", list(BINARY))
def test_binary_broadcast(op, shapes):
    sa, sb = shapes
    a = rand(*sa, seed=8)
    b = rand(*sb, seed=9) + (3.0 if op == "divide" else 0.0)
    out_shape = np.broadcast_shapes(sa, sb)
    sg = Subgraph()
    sg.output(sg.node("onednn." + op, [sg.input(sa), sg.input(sb)], out_shape))
    mod = sg.build()
    (out,) = call(sg, mod, [a, b])
    close(out, BINARY[op](a.astype(np.float64), b.astype(np.float64)), rtol=1e-6, atol=1e-7)
    if op == "divide" and sa != out_shape:
        reasons = [r["reason"] for r in stats(mod)["reorders"]]
        assert any("broadcast a" in r for r in reasons), reasons


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("const_side", [0, 1])
def test_binary_constant_operand_symbolic(op, const_side):
    """One operand a constant [8] (a LayerNorm-free scale / shift), the other [n, s, 8]."""
    c = rand(8, seed=10) + (3.0 if op == "divide" else 0.0)
    x = rand(3, 5, 8, seed=11) + (3.0 if op == "divide" and const_side == 0 else 0.0)
    sg = Subgraph()
    xi = sg.input(("n", "s", 8))
    ops = [sg.const(c), xi] if const_side == 0 else [xi, sg.const(c)]
    sg.output(sg.node("onednn." + op, ops, ("n", "s", 8)))
    mod = sg.build()
    for n, s in [(3, 5), (1, 2)]:
        xs = x[:n, :s]
        (out,) = call(sg, mod, [xs], {"n": n, "s": s})
        args = (c, xs) if const_side == 0 else (xs, c)
        close(out, BINARY[op](*(v.astype(np.float64) for v in args)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reuse", [False, True])
def test_binary_in_place(reuse):
    """add(y, b) writes into y's buffer when y dies there (one slot for the chain); when y is
    read again afterwards it gets its own dst."""
    x, b = rand(2, 3, 8, seed=51), rand(8, seed=52)
    sg = Subgraph()
    y = sg.node("onednn.relu", [sg.input(("n", 3, 8))], ("n", 3, 8))
    z = sg.node("onednn.add", [y, sg.input((8,))], ("n", 3, 8))
    if reuse:
        z = sg.node("onednn.multiply", [z, y], ("n", 3, 8))
    sg.output(sg.node("onednn.gelu", [z], ("n", 3, 8)))
    mod = sg.build()
    (out,) = call(sg, mod, [x, b], {"n": 2})
    y_ref = np.maximum(x.astype(np.float64), 0)
    z_ref = (y_ref + b) * (y_ref if reuse else 1)
    close(out, activation(z_ref, "gelu"), rtol=1e-6, atol=1e-6)
    assert stats(mod)["num_slots"] == (2 if reuse else 1)


def test_binary_with_activation_and_symbolic_broadcast():
    """add_gelu / subtract_relu, a [n, 1, s] with b [n, s, 1] -> [n, s, s] (both broadcast)."""
    a, b = rand(2, 1, 5, seed=12), rand(2, 5, 1, seed=13)
    for op, act in [("add", "gelu"), ("subtract", "relu"), ("multiply", "tanh")]:
        sg = Subgraph()
        sg.output(sg.node(f"onednn.{op}_{act}", [sg.input(("n", 1, "s")),
                                                 sg.input(("n", "s", 1))], ("n", "s", "s")))
        (out,) = call(sg, sg.build(), [a, b], {"n": 2, "s": 5})
        ref = activation(BINARY[op](a.astype(np.float64), b.astype(np.float64)), act)
        close(out, ref, rtol=1e-6, atol=1e-6)


def test_reshape_and_transpose_views():
    """A reshape of a plain value is free (a view); a transpose read by a layer_norm is reordered
    once, before it; a transpose / reshape that is a region output is copied out plain."""
    x = rand(2, 6, 12, seed=14)
    gamma, beta = rand(6, seed=15), rand(6, seed=16)
    sg = Subgraph()
    xi = sg.input(("n", 6, 12))
    r = sg.node("onednn.reshape", [xi], ("n", 6, 3, 4))
    t = sg.node("onednn.transpose", [r], ("n", 3, 4, 6), axes=[0, 2, 3, 1])
    ln = sg.node("onednn.layer_norm", [t, sg.const(gamma), sg.const(beta)], ("n", 3, 4, 6),
                 epsilon=1e-5)
    r2 = sg.node("onednn.reshape", [ln], ("n", 72))
    t2 = sg.node("onednn.transpose", [r], ("n", 4, 6, 3), axes=[0, 3, 1, 2])
    sg.output(r2, t2)
    mod = sg.build()
    out_ln, out_t = call(sg, mod, [x], {"n": 2})
    xt = x.reshape(2, 6, 3, 4).transpose(0, 2, 3, 1)
    close(out_ln, layer_norm(xt, gamma, beta, 1e-5).reshape(2, 72), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out_t, x.reshape(2, 6, 3, 4).transpose(0, 3, 1, 2))
    info = kernel_info(mod)
    assert [k["impl"] for k in info if k["op"] in ("onednn.reshape", "onednn.transpose")] == \
        ["view"] * 4
    reorders = stats(mod)["reorders"]
    # one before the layer_norm (node 2), one copying the transpose t2 out; the layer_norm
    # writes output 0 directly (its reshape r2 is a free view of the user's buffer)
    assert sorted((r["before_node"], r["output_index"]) for r in reorders) == \
        [(-1, 1), (2, -1)], reorders
    assert [k["direct_output"] for k in info if k["op"] == "onednn.layer_norm"] == [True]


def test_view_keeps_its_buffer_alive():
    """y's buffer is also viewed by the reshape r, read after y's last use: the residual add
    of y must not accumulate into it in place (r would read the sum)."""
    x, w, w2 = rand(2, 3, 8, seed=40), rand(8, 8, seed=41), rand(8, 8, seed=42)
    sg = Subgraph()
    y = sg.node("onednn.matmul", [sg.input(("n", "s", 8)), sg.const(w)], ("n", "s", 8))
    r = sg.node("onednn.reshape", [y], ("n", "s", 2, 4))
    z = sg.node("onednn.relu", [y], ("n", "s", 8))
    o = sg.node("onednn.matmul_add", [z, sg.const(w2), y], ("n", "s", 8))
    r2 = sg.node("onednn.reshape", [o], ("n", "s", 2, 4))
    sg.output(sg.node("onednn.add", [r2, r], ("n", "s", 2, 4)))
    mod = sg.build()
    (out,) = call(sg, mod, [x], {"n": 2, "s": 3})
    y_ref = x.astype(np.float64) @ w
    o_ref = np.maximum(y_ref, 0) @ w2 + y_ref
    close(out, (o_ref + y_ref).reshape(2, 3, 2, 4), rtol=1e-5, atol=1e-5)
    assert kernel_info(mod)[3]["residual"] == "binary_add"


def test_reshape_of_a_reordered_view_keeps_the_copy_alive():
    """reshape(transpose(x)) needs a plain copy of the transpose; the reshape views that copy,
    which must outlive the transpose (a gelu allocated in between must not reuse it)."""
    x, z = rand(2, 4, 6, seed=49), rand(2, 24, seed=50)
    sg = Subgraph()
    t = sg.node("onednn.transpose", [sg.input(("n", 4, 6))], ("n", 6, 4), axes=[0, 2, 1])
    r = sg.node("onednn.reshape", [t], ("n", 24))
    g = sg.node("onednn.gelu", [sg.input(("n", 24))], ("n", 24))
    sg.output(sg.node("onednn.add", [r, g], ("n", 24)))
    mod = sg.build()
    (out,) = call(sg, mod, [x, z], {"n": 2})
    ref = x.transpose(0, 2, 1).reshape(2, 24) + activation(z, "gelu")
    close(out, ref, rtol=1e-6, atol=1e-6)
    assert kernel_info(mod)[1]["impl"] == "view_after_reorder"


def test_reshape_output_is_written_directly():
    """A region ending in a reshape of a matmul: the matmul writes the user's buffer."""
    x, w, b = rand(2, 5, 16, seed=43), rand(16, 8, seed=44), rand(8, seed=45)
    sg = Subgraph()
    y = sg.node("onednn.matmul_bias", [sg.input(("n", "s", 16)), sg.const(w), sg.const(b)],
                ("n", "s", 8))
    sg.output(sg.node("onednn.reshape", [y], ("n", "s", 2, 4)))
    mod = sg.build()
    (out,) = call(sg, mod, [x], {"n": 2, "s": 5})
    close(out, (x.astype(np.float64) @ w + b).reshape(2, 5, 2, 4), rtol=1e-5, atol=1e-5)
    assert stats(mod)["reorders_per_call"] == 0
    assert kernel_info(mod)[0]["direct_output"] is True


# ---------------------------------------------------------------- matmul extensions


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("add", [None, "same", "bcast"])
def test_matmul_output_scale_and_broadcast_residual(bias, add):
    a, b = rand(2, 3, 5, 8, seed=17), rand(2, 3, 8, 5, seed=18)
    bias_v = rand(5, seed=19)
    mask = {"same": rand(2, 3, 5, 5, seed=20), "bcast": rand(2, 1, 5, 5, seed=21)}.get(add)
    scale = 1 / math.sqrt(8)
    sg = Subgraph()
    ops = [sg.input(("n", 3, "s", 8)), sg.input(("n", 3, 8, 5))]
    inputs = [a, b]
    name = "onednn.matmul"
    if bias:
        ops.append(sg.const(bias_v))
        name += "_bias"
    if add:
        ops.append(sg.input(("n", 3 if add == "same" else 1, "s", 5)))
        inputs.append(mask)
        name += "_add"
    sg.output(sg.node(name, ops, ("n", 3, "s", 5), output_scale=scale))
    mod = sg.build()
    (out,) = call(sg, mod, inputs, {"n": 2, "s": 5})
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64)) * scale
    if bias:
        ref = ref + bias_v
    if add:
        ref = ref + mask
    close(out, ref, rtol=1e-5, atol=1e-5)
    info = kernel_info(mod)[0]
    assert info["residual"] == ("binary_add" if add else "none")
    assert stats(mod)["primitives_per_call"] == 1  # post-ops, no extra primitive


def _attention_scores(fpmath):
    """q [n, 4, s, 32] @ kT [n, 4, 32, s] * 1/sqrt(32) + mask, with the fpmath attr."""
    sg = Subgraph()
    ops = [sg.input(("n", 4, "s", 32)), sg.input(("n", 4, 32, "s")), sg.input(("n", 1, "s", "s"))]
    attrs = {"output_scale": 1 / math.sqrt(32)} | ({"fpmath": fpmath} if fpmath else {})
    sg.output(sg.node("onednn.matmul_add", ops, ("n", 4, "s", "s"), **attrs))
    return sg, sg.build()


def test_matmul_fpmath_bf16():
    """fpmath "bf16" (written by quantize() on an int8 model's attention matmuls): on AMX
    oneDNN rounds the operands to bfloat16 (relative error ~2^-8 per operand, float32
    accumulation) -- not the float32 result; on CPUs without bf16 instructions the float32
    kernel, the same result."""
    q, k, mask = rand(2, 4, 64, 32, seed=40), rand(2, 4, 32, 64, seed=41), rand(2, 1, 64, 64, seed=42)
    ref = np.matmul(q.astype(np.float64), k) / math.sqrt(32) + mask
    outs = {}
    for fpmath in (None, "f32", "bf16"):
        sg, mod = _attention_scores(fpmath)
        (outs[fpmath],) = call(sg, mod, [q, k, mask], {"n": 2, "s": 64})
    close(outs[None], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(outs["f32"], outs[None])
    # q.k sums 32 products of N(0, 1) values; rounding both operands to bf16 (2^-9 relative)
    # moves a product by ~2^-8 of its size: error std ~4e-3 after the 1/sqrt(32) scale,
    # measured max 0.013 over these 32768 outputs (values up to 5.7)
    close(outs["bf16"], ref, rtol=0, atol=0.03)
    isa = _ffi_api.cpu_isa()
    if "amx" in isa:
        assert not np.array_equal(outs["bf16"], outs[None]), "fpmath bf16 had no effect on AMX"
    elif "bf16" not in isa:  # no bf16 instructions: the same float32 kernel
        np.testing.assert_array_equal(outs["bf16"], outs[None])


def test_matmul_fpmath_rejects_other_values():
    doc = _with(_matmul_add_doc([5]), lambda d: d["nodes"][0]["attrs"].update(fpmath="f16"))
    with pytest.raises(ValueError, match=r'attr fpmath must be "bf16" or "f32", got "f16"'):
        _ffi_api.create_module(json.dumps(doc))


@pytest.mark.parametrize("bias", [False, True])
def test_matmul_2d_weight_broadcast_residual(bias):
    """a [n, s, 16] @ const [16, 4] (* 0.5, + bias) + residual [1, 1, 4], [4] or [n, 1, 4]:
    the first two fold into [M, 4] (bias-like), the last runs at full rank."""
    a, w, b = rand(3, 5, 16, seed=22), rand(16, 4, seed=23), rand(4, seed=28)
    for rshape in [(1, 1, 4), (3, 1, 4), (4,)]:
        r = rand(*rshape, seed=24)
        sg = Subgraph()
        rdecl = tuple("n" if (d == 3 and i == 0) else d for i, d in enumerate(rshape))
        ops = [sg.input(("n", "s", 16)), sg.const(w)] + ([sg.const(b)] if bias else [])
        name = "onednn.matmul_bias_add_relu" if bias else "onednn.matmul_add_relu"
        sg.output(sg.node(name, ops + [sg.input(rdecl)], ("n", "s", 4), output_scale=0.5))
        mod = sg.build()
        (out,) = call(sg, mod, [a, r], {"n": 3, "s": 5})
        ref = np.maximum(np.matmul(a.astype(np.float64), w) * 0.5 + (b if bias else 0) + r, 0)
        close(out, ref, rtol=1e-5, atol=1e-5)
        assert stats(mod)["steps_per_call"] == 1


def test_matmul_transposed_constant_weight_and_scalar_constant():
    """Gemm with transB: matmul_bias(x, transpose(W)) packs the transposed constant once at
    init (no per-call reorder); a rank-0 constant is a scalar operand of a binary."""
    x, wt, bias = rand(3, 5, 16, seed=25), rand(6, 16, seed=26), rand(6, seed=27)
    doc = {"format": "tvm_onednn.subgraph", "version": 2, "symbol": "onednn_0",
           "inputs": [{"shape": ["n", 5, 16], "dtype": "float32"}],
           "constants": [{"name": "w", "shape": [6, 16], "dtype": "float32"},
                         {"name": "b", "shape": [6], "dtype": "float32"},
                         {"name": "half", "shape": [], "dtype": "float32"}],
           "nodes": [
               {"op": "onednn.transpose", "inputs": [["const", 0]], "attrs": {"axes": [1, 0]},
                "shape": [16, 6], "dtype": "float32"},
               {"op": "onednn.matmul_bias", "inputs": [["input", 0], ["node", 0], ["const", 1]],
                "shape": ["n", 5, 6], "dtype": "float32"},
               {"op": "onednn.divide", "inputs": [["node", 1], ["const", 2]],
                "shape": ["n", 5, 6], "dtype": "float32"}],
           "outputs": [["node", 2]]}
    mod = _ffi_api.create_module(json.dumps(doc))
    consts = [wt, bias, np.array(0.5, dtype="float32")]
    mod["__init_onednn_0"]([tvm.runtime.tensor(c) for c in consts])
    out = tvm.runtime.tensor(np.zeros((3, 5, 6), "float32"))
    mod["onednn_0"](tvm.runtime.tensor(x), out)
    ref = (x.astype(np.float64) @ wt.T.astype(np.float64) + bias) / 0.5
    close(out.numpy(), ref, rtol=1e-5, atol=1e-5)
    st = stats(mod)
    assert st["reorders_per_call"] == 0 and st["init_reorders"] == 1, st


def test_matmul_views_without_optimized_kernel_are_reordered_once():
    """a = transpose(x, (2, 0, 1)) has unit stride along neither of its last two dims: if no
    optimized matmul takes it, it is reordered to plain once and the copy is shared by both
    matmuls reading it; b = transpose (K contiguous) is tried as a view with a plain a."""
    x, w, b = rand(6, 8, 3, seed=46), rand(8, 5, seed=47), rand(3, 5, 8, seed=48)
    sg = Subgraph()
    t = sg.node("onednn.transpose", [sg.input((6, 8, 3))], (3, 6, 8), axes=[2, 0, 1])
    y = sg.node("onednn.matmul", [t, sg.const(w)], (3, 6, 5))
    t2 = sg.node("onednn.transpose", [sg.input((3, 5, 8))], (3, 8, 5), axes=[0, 2, 1])
    sg.output(y, sg.node("onednn.matmul", [t, t2], (3, 6, 5)))
    mod = sg.build()
    o1, o2 = call(sg, mod, [x, b])
    xt = x.transpose(2, 0, 1).astype(np.float64)
    close(o1, xt @ w, rtol=1e-5, atol=1e-5)
    close(o2, xt @ b.transpose(0, 2, 1), rtol=1e-5, atol=1e-5)
    reorders = stats(mod)["reorders"]
    print([(k["op"], k["impl"], k["src_format"], k["weights_format"]) for k in kernel_info(mod)],
          reorders)
    assert len([r for r in reorders if r["value"] == "node 0 (onednn.transpose)"]) <= 1
    assert all(not k["impl"].startswith("ref") for k in kernel_info(mod))


def test_encoder_layer_on_avx2_kernels():
    """The same region with oneDNN limited to AVX2 (fresh process): other kernels
    (gemm:jit:f32), same results, the same no-reorder check on the views."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from test_transformer_ops import *\n"
        "from tvm_onednn import _ffi_api\n"
        "assert _ffi_api.cpu_isa() == 'avx2', _ffi_api.cpu_isa()\n"
        "p = encoder_weights(); sg = encoder_region(p); mod = sg.build()\n"
        "for n, s in [(1, 7), (2, 32)]:\n"
        "    x = rand(n, s, H, seed=n + s); m = attention_mask(n, s, seed=s)\n"
        "    (out,) = call(sg, mod, [x, m], {'n': n, 's': s})\n"
        "    close(out, encoder_reference(p, x, m), rtol=1e-4, atol=2e-4)\n"
        "    check_no_view_reorders(sg, mod, n, s)\n"
        "print('ok')\n") % os.path.dirname(os.path.abspath(__file__))
    with open("/proc/cpuinfo") as f:
        if " avx2" not in f.read():
            pytest.skip("this CPU has no AVX2")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    print(res.stdout[-3000:], res.stderr[-3000:])
    assert res.returncode == 0 and res.stdout.strip().endswith("ok")


# ---------------------------------------------------------------- encoder layer

H, HEADS, DH, FF = 384, 12, 32, 1536


def encoder_weights(seed=30):
    rng = np.random.default_rng(seed)

    def w(*shape, scale):
        return (rng.standard_normal(shape) * scale).astype("float32")

    p = {name: w(H, H, scale=0.05) for name in ("wq", "wk", "wv", "wo")}
    p.update({name: w(H, scale=0.1) for name in ("bq", "bk", "bv", "bo", "b2")})
    p.update(w1=w(H, FF, scale=0.05), b1=w(FF, scale=0.1), w2=w(FF, H, scale=0.03))
    p.update(g1=1 + w(H, scale=0.1), be1=w(H, scale=0.1), g2=1 + w(H, scale=0.1),
             be2=w(H, scale=0.1))
    return p


def encoder_region(p, noop_reshape=False):
    """One MiniLM encoder layer with symbolic batch n and sequence s, as the codegen writes it
    (docs/subgraph-format.md, "Transformer ops"); `noop_reshape` adds the ONNX exporter's
    reshape of the context to its own shape (MiniLM's graph has it)."""
    sg = Subgraph()
    x = sg.input(("n", "s", H))
    mask = sg.input(("n", 1, "s", "s"))
    c = {k: sg.const(v) for k, v in p.items()}
    heads = ("n", "s", HEADS, DH)
    bhsd = ("n", HEADS, "s", DH)

    def proj(name):
        y = sg.node("onednn.matmul_bias", [x, c["w" + name], c["b" + name]], ("n", "s", H))
        return sg.node("onednn.reshape", [y], heads)

    q = sg.node("onednn.transpose", [proj("q")], bhsd, axes=[0, 2, 1, 3])
    k = sg.node("onednn.transpose", [proj("k")], ("n", HEADS, DH, "s"), axes=[0, 2, 3, 1])
    v = sg.node("onednn.transpose", [proj("v")], bhsd, axes=[0, 2, 1, 3])
    scores = sg.node("onednn.matmul_add", [q, k, mask], ("n", HEADS, "s", "s"),
                     output_scale=1 / math.sqrt(DH))
    probs = sg.node("onednn.softmax", [scores], ("n", HEADS, "s", "s"), axis=3,
                    nan_to_zero=True)
    ctx = sg.node("onednn.matmul", [probs, v], bhsd)
    if noop_reshape:
        ctx = sg.node("onednn.reshape", [ctx], bhsd)
    ctx = sg.node("onednn.transpose", [ctx], heads, axes=[0, 2, 1, 3])
    ctx = sg.node("onednn.reshape", [ctx], ("n", "s", H))
    attn = sg.node("onednn.matmul_bias_add", [ctx, c["wo"], c["bo"], x], ("n", "s", H))
    h1 = sg.node("onednn.layer_norm", [attn, c["g1"], c["be1"]], ("n", "s", H), epsilon=1e-12)
    f1 = sg.node("onednn.matmul_bias_gelu", [h1, c["w1"], c["b1"]], ("n", "s", FF))
    f2 = sg.node("onednn.matmul_bias_add", [f1, c["w2"], c["b2"], h1], ("n", "s", H))
    sg.output(sg.node("onednn.layer_norm", [f2, c["g2"], c["be2"]], ("n", "s", H),
                      epsilon=1e-12))
    return sg


def encoder_reference(p, x, mask):
    p = {k: v.astype(np.float64) for k, v in p.items()}
    x = x.astype(np.float64)
    n, s, _ = x.shape

    def heads(y):
        return y.reshape(n, s, HEADS, DH).transpose(0, 2, 1, 3)

    q, k, v = (heads(x @ p["w" + m] + p["b" + m]) for m in "qkv")
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(DH) + mask
    probs = softmax(scores, 3)
    probs = np.where(np.isnan(probs), 0.0, probs)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n, s, H)
    h1 = layer_norm(ctx @ p["wo"] + p["bo"] + x, p["g1"], p["be1"], 1e-12)
    f1 = activation(h1 @ p["w1"] + p["b1"], "gelu")
    return layer_norm(f1 @ p["w2"] + p["b2"] + h1, p["g2"], p["be2"], 1e-12)


def attention_mask(n, s, seed):
    """BERT's additive mask: 0 for tokens, a large negative value for padding."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, s + 1, size=n)
    keep = np.arange(s)[None, :] < lengths[:, None]
    return np.where(keep, 0.0, -10000.0).astype("float32").reshape(n, 1, 1, s).repeat(s, 2)


def test_encoder_layer_one_region():
    p = encoder_weights()
    sg = encoder_region(p)
    mod = sg.build()
    for n, s in [(1, 7), (2, 32), (1, 32), (2, 7), (1, 128)]:
        x = rand(n, s, H, seed=n * 100 + s)
        mask = attention_mask(n, s, seed=s)
        (out,) = call(sg, mod, [x, mask], {"n": n, "s": s})
        # tolerance: float32 through 6 matmuls (K up to 1536) and two layer norms vs float64
        close(out, encoder_reference(p, x, mask), rtol=1e-4, atol=2e-4)
        check_no_view_reorders(sg, mod, n, s)
    assert stats(mod)["plans_cached"] == 5


@pytest.mark.parametrize("fused", [True, False])
def test_encoder_layer_exporter_form_plans_no_reorder(fused, monkeypatch):
    """With the exporter's no-op reshape between the context matmul and its transpose, the
    context (fused attention or matmul) still writes the transposed layout (no reorder before
    the output projection). Fused, the attention reads the head views in place; unfused
    (TVM_ONEDNN_FUSED_ATTENTION=0), on AVX-512 both attention matmuls run brgemm on the head
    views (not gemm:jit)."""
    monkeypatch.setenv("TVM_ONEDNN_FUSED_ATTENTION", "1" if fused else "0")
    p = encoder_weights()
    sg = encoder_region(p, noop_reshape=True)
    mod = sg.build()
    isa = _ffi_api.cpu_isa()
    for n, s in [(1, 128), (2, 32), (1, 7)]:
        x = rand(n, s, H, seed=n * 100 + s)
        mask = attention_mask(n, s, seed=s)
        (out,) = call(sg, mod, [x, mask], {"n": n, "s": s})
        # tolerance: as test_encoder_layer_one_region
        close(out, encoder_reference(p, x, mask), rtol=1e-4, atol=2e-4)
        assert stats(mod)["reorders"] == [], stats(mod)["reorders"]
        impls = [k["impl"] for k in kernel_info(mod)
                 if k["op"] in ("onednn.matmul", "onednn.matmul_add")]
        if fused and isa.startswith(("avx512", "avx2")):
            assert len(impls) == 2 and all(i.startswith("fused_attention") for i in impls), impls
        elif not fused and isa.startswith("avx512"):
            assert impls and all(i.startswith("brg") for i in impls), impls


def check_no_view_reorders(sg, mod, n, s):
    """No reorder is planned for the transposes / reshapes feeding the matmuls unless the matmul
    runs a reference kernel on the views (then one reorder to plain is expected: printed)."""
    info = kernel_info(mod)
    by_node = {k["node"]: k for k in info}
    reorders = stats(mod)["reorders"]
    views = set(node_ids(sg, "onednn.transpose") + node_ids(sg, "onednn.reshape"))
    for i, node in enumerate(sg.nodes):
        if not node["op"].startswith("onednn.matmul"):
            continue
        if not any(ref[0] == "node" and ref[1] in views for ref in node["inputs"]):
            continue
        mine = [r for r in reorders if r["before_node"] == i]
        impl = by_node[i]["impl"]
        if node["op"] == "onednn.matmul" and not impl.startswith("ref"):
            # the context matmul writes [n, s, 12, 32] memory (acbd; also bac when n = 1 folds
            # [n * 12, s, 32]): the transpose after it is plain
            assert by_node[i]["dst_format"] in (("bac", "acbd") if n == 1 else ("acbd",)), by_node[i]
        if impl.startswith("ref"):
            print(f"n={n} s={s}: node {i} runs {impl}; reorders: {mine}")
        else:
            assert mine == [], (impl, mine)
    print(f"n={n} s={s}: impls {[(k['op'], k['impl']) for k in info]}; reorders {reorders}")


# ---------------------------------------------------------------- validation


def _ln_doc():
    sg = Subgraph()
    sg.output(sg.node("onednn.layer_norm", [sg.input(("n", 4, 8)), sg.const(np.ones(8)),
                                            sg.const(np.zeros(8))], ("n", 4, 8), epsilon=1e-5))
    return sg.doc()


def _unary_doc(op, shape, out, **attrs):
    sg = Subgraph()
    sg.output(sg.node(op, [sg.input(shape)], out, **attrs))
    return sg.doc()


def _binary_doc(sa, sb, out):
    sg = Subgraph()
    sg.output(sg.node("onednn.add", [sg.input(sa), sg.input(sb)], out))
    return sg.doc()


def _matmul_add_doc(rshape):
    sg = Subgraph()
    sg.output(sg.node("onednn.matmul_add", [sg.input(("n", 2, 5, 8)), sg.input(("n", 2, 8, 5)),
                                            sg.input(rshape)], ("n", 2, 5, 5)))
    return sg.doc()


def _with(doc, fn):
    doc = copy.deepcopy(doc)
    fn(doc)
    return doc


def _set_const_shape(doc, i, shape):
    doc["constants"][i]["shape"] = shape


ERRORS = [
    (_with(_ln_doc(), lambda d: _set_const_shape(d, 0, [4])),
     r"node 0 \(onednn.layer_norm\): gamma \(const 0 \(onednn_0_onednn_const_0\)\) has shape "
     r"\[4\], expected \[8\] \(the last dim of data \[n,4,8\]\)"),
    (_with(_ln_doc(), lambda d: _set_const_shape(d, 1, [1, 8])),
     r"beta \(const 1 \(onednn_0_onednn_const_1\)\) has shape \[1,8\], expected \[8\]"),
    (_with(_ln_doc(), lambda d: d["nodes"][0]["attrs"].pop("epsilon")),
     r"attrs is missing required field \"epsilon\""),
    (_unary_doc("onednn.layer_norm", ["n", "c"], ["n", "c"]),
     r"expects 3 operands, got 1"),
    (_unary_doc("onednn.transpose", ["n", 3, 4], ["n", 4, 3], axes=[0, 2, 2]),
     r"node 0 \(onednn.transpose\): attr axes \[0,2,2\] is not a permutation of 0..2 "
     r"\(data \[n,3,4\] has rank 3\)"),
    (_unary_doc("onednn.transpose", ["n", 3, 4], ["n", 4, 3], axes=[0, 2]),
     r"attr axes \[0,2\] is not a permutation of 0..2"),
    (_unary_doc("onednn.transpose", ["n", 3, 4], ["n", 3, 4], axes=[0, 2, 1]),
     r"declared output shape \[n,3,4\] does not match the shape \[n,4,3\]"),
    (_binary_doc(["n", 3, 4], [2, 4], ["n", 3, 4]),
     r"node 0 \(onednn.add\): a \(input 0\) \[n,3,4\] and b \(input 1\) \[2,4\] are not "
     r"broadcastable: output dim 1 pairs 3 with 2 \(numpy rules: equal or 1\)"),
    (_binary_doc(["n", 4], ["s", 4], ["n", 4]),
     r"a \(input 0\) \[n,4\] and b \(input 1\) \[s,4\] are not broadcastable: output dim 0 "
     r"pairs n with s"),
    (_binary_doc(["n", 3, 4], [4], ["n", 3, 1]),
     r"declared output shape \[n,3,1\] does not match the shape \[n,3,4\]"),
    (_unary_doc("onednn.reshape", ["n", "s", 384], ["n", "s", 12, 30]),
     r"node 0 \(onednn.reshape\): output shape \[n,s,12,30\] has n\*s\*360 elements, but data "
     r"\[n,s,384\] has n\*s\*384 \(a reshape keeps the element count"),
    (_unary_doc("onednn.reshape", ["n", "s", 4], ["n", 4, 4]),
     r"output shape \[n,4,4\] has n\*16 elements, but data \[n,s,4\] has n\*s\*4"),
    (_unary_doc("onednn.softmax", ["n", 4], ["n", 4], axis=2),
     r"attr axis 2 is out of range for data \[n,4\] of rank 2 \(expected 0 <= axis < 2\)"),
    (_unary_doc("onednn.softmax", ["n", 4], ["n", 4], axis=-1),
     r"attr axis must be >= 0"),
    (_unary_doc("onednn.relu", [], []),
     r"node 0 \(onednn.relu\): output shape \[\] has rank 0, expected 1 to 12 dims"),
    (_unary_doc("onednn.gelu", ["n", 4], ["n", 5]),
     r"node 0 \(onednn.gelu\): declared output shape \[n,5\] does not match"),
    (_matmul_add_doc(["n", 3, 5, 5]),
     r"residual \(input 2\) has shape \[n,3,5,5\], which does not broadcast to the output "
     r"shape \[n,2,5,5\]"),
    (_matmul_add_doc([1, "n", 2, 5, 5]),
     r"residual \(input 2\) has shape \[1,n,2,5,5\], which does not broadcast"),
]


@pytest.mark.parametrize("doc,match", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_validation_errors(doc, match):
    with pytest.raises(ValueError, match=match):
        _ffi_api.create_module(json.dumps(doc))


def test_valid_broadcast_residual_and_output_scale_parse():
    _ffi_api.create_module(json.dumps(_matmul_add_doc(["n", 1, 5, 5])))
    _ffi_api.create_module(json.dumps(_matmul_add_doc([5, 5])))
    doc = _with(_matmul_add_doc([5]), lambda d: d["nodes"][0]["attrs"].update(output_scale="x"))
    with pytest.raises(ValueError, match=r"attr output_scale must be a number, got string"):
        _ffi_api.create_module(json.dumps(doc))
