"""Multi-node regions: layout propagation (no internal reorders), multiple outputs,
degenerate outputs, concurrency."""

import threading

import numpy as np
import pytest

from numpy_ref import conv2d, pool2d
from runtime_utils import Subgraph, assert_close, kernel_info, rand, run_graph, stats

CONV3 = dict(strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)


def chain_graph(seed=0):
    """conv -> conv -> maxpool -> conv(+bias, relu); ResNet-stem-like channel counts."""
    x = rand(1, 16, 16, 16, seed=seed)
    w0 = rand(32, 16, 3, 3, seed=seed + 1, scale=0.1)
    w1 = rand(32, 32, 3, 3, seed=seed + 2, scale=0.1)
    w2 = rand(64, 32, 3, 3, seed=seed + 3, scale=0.1)
    b2 = rand(64, seed=seed + 4)
    sg = Subgraph()
    n0 = sg.node("onednn.conv2d_relu", [sg.input(x.shape), sg.const(w0)], (1, 32, 16, 16),
                 **CONV3)
    n1 = sg.node("onednn.conv2d_relu", [n0, sg.const(w1)], (1, 32, 16, 16), **CONV3)
    n2 = sg.node("onednn.max_pool2d", [n1], (1, 32, 8, 8), pool_size=[2, 2], strides=[2, 2],
                 padding=[0, 0, 0, 0], dilation=[1, 1], ceil_mode=False)
    n3 = sg.node("onednn.conv2d_bias_relu", [n2, sg.const(w2), sg.const(b2)], (1, 64, 8, 8),
                 **CONV3)
    sg.output(n3)
    r0 = np.maximum(conv2d(x, w0, None, (1, 1), (1, 1, 1, 1)), 0)
    r1 = np.maximum(conv2d(r0, w1, None, (1, 1), (1, 1, 1, 1)), 0)
    r2 = pool2d(r1, "max", (2, 2), (2, 2))
    r3 = np.maximum(conv2d(r2, w2, b2, (1, 1), (1, 1, 1, 1)), 0)
    return sg, [x], r3


def test_chain_has_no_internal_reorders():
    sg, inputs, ref = chain_graph()
    mod = sg.build()
    (out,) = run_graph(sg, inputs, mod)
    assert_close(out, ref)
    st = stats(mod)
    for r in st["reorders"]:
        # only at region boundaries: from a region input, or into a region output
        assert r["value"].startswith("input") or r["output_index"] >= 0, st
    assert st["reorders_per_call"] <= 2, st
    info = kernel_info(mod)
    # each consumer reads its producer's layout
    assert info[1]["src_format"] == info[0]["dst_format"]
    assert info[2]["src_format"] == info[1]["dst_format"]
    assert info[3]["src_format"] == info[2]["dst_format"]
    for node in info:
        assert "ref" not in node["impl"], info


def test_stats_count_calls_and_contexts():
    sg, inputs, ref = chain_graph(seed=3)
    mod = sg.build()
    for _ in range(3):
        (out,) = run_graph(sg, inputs, mod)
    st = stats(mod)
    assert st["calls"] == 3
    assert st["contexts_created"] == 1
    assert st["init_reorders"] >= 3  # weights packed once at init


def test_multi_output_region():
    x = rand(1, 8, 8, 8, seed=2)
    w0, w1 = rand(16, 8, 3, 3, seed=3, scale=0.2), rand(16, 16, 1, 1, seed=4, scale=0.2)
    sg = Subgraph()
    xi = sg.input(x.shape)
    n0 = sg.node("onednn.conv2d_relu", [xi, sg.const(w0)], (1, 16, 8, 8), **CONV3)
    n1 = sg.node("onednn.conv2d", [n0, sg.const(w1)], (1, 16, 8, 8), strides=[1, 1],
                 padding=[0, 0, 0, 0], dilation=[1, 1], groups=1)
    n2 = sg.node("onednn.global_avg_pool2d", [n1], (1, 16, 1, 1))
    sg.output(n2, n0, n1, n0, xi)  # internal+output values, a duplicate, an input
    mod = sg.build()
    outs = run_graph(sg, [x], mod)
    r0 = np.maximum(conv2d(x, w0, None, (1, 1), (1, 1, 1, 1)), 0)
    r1 = conv2d(r0, w1)
    assert_close(outs[0], r1.mean(axis=(2, 3), keepdims=True))
    assert_close(outs[1], r0)
    assert_close(outs[2], r1)
    assert_close(outs[3], r0)
    np.testing.assert_array_equal(outs[4], x)


def test_output_is_input_only():
    x = rand(2, 3)
    sg = Subgraph()
    sg.output(sg.input(x.shape))
    (out,) = run_graph(sg, [x])
    np.testing.assert_array_equal(out, x)


def test_dead_node_is_allowed():
    x = rand(1, 4, 6, 6)
    w = rand(4, 4, 3, 3, scale=0.2)
    sg = Subgraph()
    xi = sg.input(x.shape)
    sg.node("onednn.conv2d", [xi, sg.const(w)], (1, 4, 6, 6), **CONV3)  # unused
    n1 = sg.node("onednn.max_pool2d", [xi], (1, 4, 3, 3), pool_size=[2, 2], strides=[2, 2],
                 padding=[0, 0, 0, 0], dilation=[1, 1], ceil_mode=False)
    sg.output(n1)
    (out,) = run_graph(sg, [x])
    assert_close(out, pool2d(x, "max", (2, 2), (2, 2)))


def test_concurrent_calls_are_identical():
    sg, inputs, ref = chain_graph(seed=7)
    mod = sg.build()
    xs = [rand(1, 16, 16, 16, seed=100 + i) for i in range(4)]
    expected = [run_graph(sg, [x], mod)[0] for x in xs]
    errors, results = [], {}

    def worker(tid):
        try:
            for it in range(25):
                k = (tid + it) % 4
                (out,) = run_graph(sg, [xs[k]], mod)
                if not np.array_equal(out, expected[k]):
                    errors.append((tid, it))
            results[tid] = True
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4
    st = stats(mod)
    assert 1 <= st["contexts_created"] <= 4
    assert st["contexts_free"] == st["contexts_created"]


def test_resnet_stem_block_residual_is_accumulated_in_place():
    """conv7x7(C=3) -> maxpool -> conv -> conv_add(residual=maxpool): the pool output dies at
    the add, so it is summed in place (in its own buffer, or in its reordered copy)."""
    x = rand(1, 3, 32, 32, seed=21)
    w0 = rand(16, 3, 7, 7, seed=22, scale=0.1)
    w1, w2 = rand(16, 16, 3, 3, seed=23, scale=0.1), rand(16, 16, 3, 3, seed=24, scale=0.1)
    b0, b1, b2 = rand(16, seed=25), rand(16, seed=26), rand(16, seed=27)
    sg = Subgraph()
    n0 = sg.node("onednn.conv2d_bias_relu", [sg.input(x.shape), sg.const(w0), sg.const(b0)],
                 (1, 16, 16, 16), strides=[2, 2], padding=[3, 3, 3, 3], dilation=[1, 1],
                 groups=1)
    n1 = sg.node("onednn.max_pool2d", [n0], (1, 16, 8, 8), pool_size=[3, 3], strides=[2, 2],
                 padding=[1, 1, 1, 1], dilation=[1, 1], ceil_mode=False)
    n2 = sg.node("onednn.conv2d_bias_relu", [n1, sg.const(w1), sg.const(b1)], (1, 16, 8, 8),
                 **CONV3)
    n3 = sg.node("onednn.conv2d_bias_add_relu", [n2, sg.const(w2), sg.const(b2), n1],
                 (1, 16, 8, 8), **CONV3)
    sg.output(sg.node("onednn.global_avg_pool2d", [n3], (1, 16, 1, 1)))
    mod = sg.build()
    (out,) = run_graph(sg, [x], mod)
    r0 = np.maximum(conv2d(x, w0, b0, (2, 2), (3, 3, 3, 3)), 0)
    r1 = pool2d(r0, "max", (3, 3), (2, 2), (1, 1, 1, 1))
    r2 = np.maximum(conv2d(r1, w1, b1, (1, 1), (1, 1, 1, 1)), 0)
    r3 = np.maximum(conv2d(r2, w2, b2, (1, 1), (1, 1, 1, 1)) + r1, 0)
    assert_close(out, r3.mean(axis=(2, 3), keepdims=True))
    info = kernel_info(mod)
    assert info[3]["residual"] in ("sum_inplace", "sum_inplace_copy"), info
    assert info[4]["direct_output"]
    st = stats(mod)
    assert all(r["output_index"] < 0 for r in st["reorders"]), st  # output written directly
