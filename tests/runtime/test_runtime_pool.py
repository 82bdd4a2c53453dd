"""max / avg / global-avg pooling vs numpy (TVM/PyTorch ceil_mode + count_include_pad rules)."""

import pytest

from numpy_ref import global_avg_pool2d, pool2d, pool_out_size
from runtime_utils import Subgraph, assert_close, kernel_info, rand, run_graph

# (N, C, H, W, pool, strides, padding, dilation, ceil_mode)
CASES = {
    "k2s2": (1, 8, 8, 8, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    "k3s2p1": (1, 16, 14, 14, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    "k3s1p1": (2, 4, 7, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    "asym_pad": (1, 8, 9, 9, (3, 3), (2, 2), (0, 1, 1, 0), (1, 1), False),
    "ceil": (1, 8, 6, 6, (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), True),
    "ceil_pad": (1, 8, 6, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    "ceil_pad_drop_last": (1, 8, 5, 5, (2, 2), (2, 2), (1, 1, 1, 1), (1, 1), True),
    "ceil_rect": (1, 16, 7, 10, (3, 2), (2, 3), (1, 0, 1, 0), (1, 1), True),
    "dilation": (1, 8, 12, 12, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), False),
}


def build(kind, case, count_include_pad=False, seed=0):
    n, c, h, w, k, s, p, d, ceil = case
    x = rand(n, c, h, w, seed=seed)
    oh = pool_out_size(h, k[0], s[0], p[0], p[2], d[0], ceil)
    ow = pool_out_size(w, k[1], s[1], p[1], p[3], d[1], ceil)
    attrs = dict(pool_size=list(k), strides=list(s), padding=list(p), dilation=list(d),
                 ceil_mode=ceil)
    if kind == "avg":
        attrs["count_include_pad"] = count_include_pad
    sg = Subgraph()
    sg.output(sg.node(f"onednn.{kind}_pool2d", [sg.input(x.shape)], (n, c, oh, ow), **attrs))
    ref = pool2d(x, kind, k, s, p, d, ceil, count_include_pad)
    assert ref.shape == (n, c, oh, ow)
    return sg, [x], ref


@pytest.mark.parametrize("case", list(CASES))
def test_max_pool(case):
    sg, inputs, ref = build("max", CASES[case])
    (out,) = run_graph(sg, inputs)
    assert_close(out, ref)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool(case, count_include_pad):
    sg, inputs, ref = build("avg", CASES[case], count_include_pad)
    (out,) = run_graph(sg, inputs)
    assert_close(out, ref)


@pytest.mark.parametrize("shape", [(1, 64, 7, 7), (2, 3, 5, 4), (1, 2048, 7, 7)])
def test_global_avg_pool(shape):
    x = rand(*shape)
    sg = Subgraph()
    sg.output(sg.node("onednn.global_avg_pool2d", [sg.input(shape)], shape[:2] + (1, 1)))
    mod = sg.build()
    (out,) = run_graph(sg, [x], mod)
    assert_close(out, global_avg_pool2d(x))
    assert kernel_info(mod)[0]["direct_output"]


def test_pool_rejects_wrong_declared_shape():
    sg, _, _ = build("max", CASES["ceil_pad_drop_last"])
    sg.nodes[0]["shape"] = [1, 8, 4, 4]  # the window starting in the padding is dropped
    with pytest.raises(ValueError, match=r"declared output shape \[1,8,4,4\]"):
        sg.build()
