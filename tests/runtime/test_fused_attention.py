"""Fused attention (src/attention.h): `matmul[_add] -> softmax -> matmul` chains whose scores
and probabilities nothing else reads run as one host step (AVX-512 or AVX2 kernel). The
reference is numpy in float64, and the same region with the fusion off
(TVM_ONEDNN_FUSED_ATTENTION=0, three oneDNN primitives); tolerances are stated per test.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from runtime_utils import Subgraph, kernel_info, rand, stats
from test_transformer_ops import call, close, softmax
from tvm_onednn import _ffi_api


def fused_isa():
    """The kernel this CPU runs: avx512 / avx2 (oneDNN's ISA), None without AVX2."""
    isa = _ffi_api.cpu_isa()
    if isa.startswith("avx512"):
        return "avx512"
    if isa.startswith("avx2"):
        return "avx2"
    return None


needs_kernel = pytest.mark.skipif(fused_isa() is None,
                                  reason="no AVX2: attention stays three oneDNN primitives")


def attention_region(lead, sq, sk, d, dv, mask_shape=None, views=True, nan_to_zero=True,
                     scale=None):
    """q [*lead, sq, d], k^T [*lead, d, sk], v [*lead, sk, dv] -> out [*lead, sq, dv].
    `views`: q / k / v are the head views of [n, s, heads, dh] inputs, as in an encoder."""
    sg = Subgraph()
    lead = tuple(lead)
    if views:
        assert len(lead) == 2
        n, h = lead
        q = sg.node("onednn.transpose", [sg.input((n, sq, h, d))], (n, h, sq, d), axes=[0, 2, 1, 3])
        k = sg.node("onednn.transpose", [sg.input((n, sk, h, d))], (n, h, d, sk), axes=[0, 2, 3, 1])
        v = sg.node("onednn.transpose", [sg.input((n, sk, h, dv))], (n, h, sk, dv),
                    axes=[0, 2, 1, 3])
    else:
        q = sg.input(lead + (sq, d))
        k = sg.input(lead + (d, sk))
        v = sg.input(lead + (sk, dv))
    scale = 1 / math.sqrt(d) if scale is None else scale
    if mask_shape is None:
        scores = sg.node("onednn.matmul", [q, k], lead + (sq, sk), output_scale=scale)
    else:
        scores = sg.node("onednn.matmul_add", [q, k, sg.input(mask_shape)], lead + (sq, sk),
                         output_scale=scale)
    probs = sg.node("onednn.softmax", [scores], lead + (sq, sk), axis=len(lead) + 1,
                    nan_to_zero=nan_to_zero)
    sg.output(sg.node("onednn.matmul", [probs, v], lead + (sq, dv)))
    return sg


def region_inputs(sg, seed, mask_fill=None):
    arrays = []
    for i, decl in enumerate(sg.inputs):
        x = rand(*decl["shape"], seed=seed + i)
        if mask_fill is not None and i == 3:
            x = mask_fill(x)
        arrays.append(x)
    return arrays


def reference(lead, views, arrays, scale, nan_to_zero=True):
    q, k, v = (a.astype(np.float64) for a in arrays[:3])
    if views:
        q, k, v = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
    scores = q @ k * scale
    if len(arrays) > 3:
        scores = scores + arrays[3]
    probs = softmax(scores, -1)
    if nan_to_zero:
        probs = np.where(np.isnan(probs), 0.0, probs)
    return probs @ v


def build(sg, fused):
    os.environ["TVM_ONEDNN_FUSED_ATTENTION"] = "1" if fused else "0"
    try:
        return sg.build()
    finally:
        del os.environ["TVM_ONEDNN_FUSED_ATTENTION"]


def assert_fused(sg, mod, fused=True):
    impls = [k["impl"] for k in kernel_info(mod)]
    out_node = len(sg.nodes) - 1
    if fused:
        assert impls[out_node] == "fused_attention:" + fused_isa(), impls
        assert impls[out_node - 2].startswith("fused_attention:"), impls  # scores
        assert impls[out_node - 1].endswith(f"(in node {out_node})"), impls  # softmax
    else:
        assert not any(i.startswith("fused_attention") for i in impls), impls


CASES = [
    # lead, sq, sk, d, dv, mask shape (None: no mask), head views
    ((2, 3), 17, 17, 32, 32, (2, 1, 1, 17), True),       # BERT mask [n, 1, 1, s]
    ((1, 12), 128, 128, 32, 32, (1, 1, 128, 128), True),  # MiniLM's shapes
    ((2, 2), 5, 70, 64, 64, (2, 1, 5, 70), True),         # keys: one 64-block and a partial one
    ((2, 2), 9, 33, 5, 40, None, True),                  # odd head dim, no mask
    ((3,), 13, 129, 24, 100, (1, 13, 129), False),        # plain operands, 3-D
    ((2, 2), 6, 16, 16, 8, (2, 2, 6, 1), False),         # mask broadcast along the keys
    ((1, 1), 1, 1, 1, 1, (1, 1, 1, 1), False),           # one row, one key
]


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=[str(c[:5]) for c in CASES])
def test_fused_matches_numpy_and_unfused(case):
    lead, sq, sk, d, dv, mask_shape, views = case
    sg = attention_region(lead, sq, sk, d, dv, mask_shape, views)
    arrays = region_inputs(sg, seed=sum(lead) + sq + sk)
    fused, unfused = build(sg, True), build(sg, False)
    assert_fused(sg, fused)
    assert_fused(sg, unfused, fused=False)
    (out,) = call(sg, fused, arrays)
    (out_unfused,) = call(sg, unfused, arrays)
    ref = reference(lead, views, arrays, 1 / math.sqrt(d))
    # float32 sums of <= 129 products, exp within 2 ulp: vs float64
    close(out, ref, rtol=1e-5, atol=1e-5)
    close(out, out_unfused, rtol=1e-5, atol=1e-5)
    assert stats(fused)["reorders"] == [] or not views, stats(fused)["reorders"]


@needs_kernel
@pytest.mark.parametrize("nan_to_zero", [True, False])
def test_masked_rows_and_nan(nan_to_zero):
    """A row whose mask is all -inf or that holds a NaN has a NaN softmax: zeros under
    nan_to_zero (as three primitives give), NaN otherwise; a finite huge negative mask
    (-3.4e38, what exporters write) and partly masked rows are ordinary rows."""
    lead, sq, sk, d = (2, 2), 8, 20, 16

    def fill(mask):
        mask = np.zeros_like(mask)
        mask[0, 0, 1, :] = -np.inf                  # row 1 of batch 0, every head: all -inf
        mask[0, 0, 2, 5:] = -np.inf                 # partly masked
        mask[1, 0, 3, :] = np.finfo(np.float32).min  # finite, huge: an ordinary softmax
        mask[1, 0, 4, :17] = np.finfo(np.float32).min
        return mask

    sg = attention_region(lead, sq, sk, d, d, (2, 1, sq, sk), views=False,
                          nan_to_zero=nan_to_zero)
    arrays = region_inputs(sg, seed=3, mask_fill=fill)
    arrays[0][1, 1, 6, 3] = np.nan  # q row 6 of batch 1, head 1
    mod = build(sg, True)
    assert_fused(sg, mod)
    (out,) = call(sg, mod, arrays)
    (out_unfused,) = call(sg, build(sg, False), arrays)
    ref = reference(lead, False, arrays, 1 / math.sqrt(d), nan_to_zero)
    bad = [(0, slice(None), 1), (1, 1, 6)]
    for b in bad:
        if nan_to_zero:
            assert (out[b] == 0).all(), out[b]
        else:
            assert np.isnan(out[b]).all(), out[b]
    np.testing.assert_array_equal(np.isnan(out), np.isnan(out_unfused))
    finite = ~np.isnan(ref)
    close(out[finite], ref[finite], rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts(threads):
    """Rows are split evenly over the threads, mid-head; every count gives the same result."""
    sg = attention_region((2, 3), 37, 45, 32, 32, (2, 1, 1, 45), views=True)
    arrays = region_inputs(sg, seed=11)
    before = _ffi_api.get_num_threads()
    _ffi_api.set_num_threads(threads)
    try:
        mod = build(sg, True)
        (out,) = call(sg, mod, arrays)
    finally:
        _ffi_api.set_num_threads(before)
    close(out, reference((2, 3), True, arrays, 1 / math.sqrt(32)), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_symbolic_batch_and_sequence():
    """One module, plans for several (n, s): each plan fuses its own chain."""
    sg = attention_region(("n", 4), "s", "s", 32, 32, ("n", 1, 1, "s"), views=True)
    mod = build(sg, True)
    for n, s in [(1, 7), (3, 64), (2, 130)]:
        concrete = attention_region((n, 4), s, s, 32, 32, (n, 1, 1, s), views=True)
        arrays = region_inputs(concrete, seed=n + s)
        (out,) = call(sg, mod, arrays, {"n": n, "s": s})
        close(out, reference((n, 4), True, arrays, 1 / math.sqrt(32)), rtol=1e-5, atol=1e-5)
        assert_fused(sg, mod)


def test_chains_that_stay_unfused():
    """Scores also read elsewhere (a region output), softmax over another axis, a bias on the
    second matmul: three (or more) primitives, the same results as numpy."""
    lead, s, d = (1, 2), 6, 8
    q, k, v = rand(1, 2, s, d, seed=1), rand(1, 2, d, s, seed=2), rand(1, 2, s, d, seed=3)
    ref_scores = q.astype(np.float64) @ k

    sg = Subgraph()
    scores = sg.node("onednn.matmul", [sg.input(q.shape), sg.input(k.shape)], (1, 2, s, s))
    probs = sg.node("onednn.softmax", [scores], (1, 2, s, s), axis=3)
    sg.output(sg.node("onednn.matmul", [probs, sg.input(v.shape)], (1, 2, s, d)), scores)
    mod = sg.build()
    assert_fused(sg, mod, fused=False)
    out, sc = call(sg, mod, [q, k, v])
    close(sc, ref_scores, rtol=1e-5, atol=1e-5)
    close(out, softmax(ref_scores, -1) @ v, rtol=1e-5, atol=1e-5)

    sg = Subgraph()
    scores = sg.node("onednn.matmul", [sg.input(q.shape), sg.input(k.shape)], (1, 2, s, s))
    probs = sg.node("onednn.softmax", [scores], (1, 2, s, s), axis=2)
    sg.output(sg.node("onednn.matmul", [probs, sg.input(v.shape)], (1, 2, s, d)))
    mod = sg.build()
    assert_fused(sg, mod, fused=False)
    (out,) = call(sg, mod, [q, k, v])
    close(out, softmax(ref_scores, 2) @ v, rtol=1e-5, atol=1e-5)

    w, b = rand(s, d, seed=4), rand(d, seed=5)
    sg = Subgraph()
    scores = sg.node("onednn.matmul", [sg.input(q.shape), sg.input(k.shape)], (1, 2, s, s))
    probs = sg.node("onednn.softmax", [scores], (1, 2, s, s), axis=3)
    sg.output(sg.node("onednn.matmul_bias", [probs, sg.const(w), sg.const(b)], (1, 2, s, d)))
    mod = sg.build()
    assert_fused(sg, mod, fused=False)
    (out,) = call(sg, mod, [q, k])
    close(out, softmax(ref_scores, -1) @ w + b, rtol=1e-5, atol=1e-5)


def test_avx2_kernel_in_a_fresh_process():
    """With oneDNN capped at AVX2 the AVX2 kernel runs (8-float vectors, 16-key blocks): the
    same cases as on this CPU's own kernel."""
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    if " avx2" not in flags or " fma" not in flags:
        pytest.skip("this CPU has no AVX2 + FMA")
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from test_fused_attention import *\n"
        "assert fused_isa() == 'avx2', _ffi_api.cpu_isa()\n"
        "for case in CASES:\n"
        "    test_fused_matches_numpy_and_unfused(case)\n"
        "test_masked_rows_and_nan(True)\n"
        "print('ok')\n") % os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    print(res.stdout[-3000:], res.stderr[-3000:])
    assert res.returncode == 0 and res.stdout.strip().endswith("ok")
