"""Symbolic dims (subgraph format version 2): one module runs any batch size / sequence length.

References are numpy (float64) and the same graph built with static shapes; int8 graphs are
checked against the document's quantization semantics (test_runtime_int8.reference).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tvm

from numpy_ref import conv2d, pool2d
from runtime_utils import Subgraph, assert_close, kernel_info, rand, stats
from test_runtime_int8 import QGraph, f32, qweights, reference, roundings_of, weight_scales
from tvm_onednn import _ffi_api

CONV3 = dict(strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)
POOL2 = dict(pool_size=[2, 2], strides=[2, 2], padding=[0, 0, 0, 0], dilation=[1, 1],
             ceil_mode=False)


# ---------------------------------------------------------------- helpers


def concrete(shape, env):
    return tuple(env[d] if isinstance(d, str) else d for d in shape)


def call(sg, mod, inputs, env, out_dtype="float32"):
    """Run the region with concrete inputs; output shapes come from the symbol values `env`."""
    args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs]
    outs = [tvm.runtime.tensor(np.full(concrete(s, env), np.nan, dtype=out_dtype))
            for s in sg.output_shapes()]
    mod[sg.symbol](*args, *outs)
    return [o.numpy() for o in outs]


@pytest.fixture
def plan_cache_size():
    """Set the process-wide plan cache capacity for one test; restores it afterwards."""
    get = tvm.get_global_func("onednn.get_plan_cache_size")
    set_ = tvm.get_global_func("onednn.set_plan_cache_size")
    before = get()
    yield set_
    set_(before)


def conv_chain(n="n", seed=0):
    """conv2d_bias_relu -> max pool -> conv2d_bias_add (residual: the pool output)."""
    w0, b0 = rand(16, 8, 3, 3, seed=seed, scale=0.2), rand(16, seed=seed + 1)
    w1, b1 = rand(16, 16, 3, 3, seed=seed + 2, scale=0.1), rand(16, seed=seed + 3)
    sg = Subgraph()
    x = sg.input([n, 8, 12, 12])
    c0 = sg.node("onednn.conv2d_bias_relu", [x, sg.const(w0), sg.const(b0)], [n, 16, 12, 12],
                 **CONV3)
    p = sg.node("onednn.max_pool2d", [c0], [n, 16, 6, 6], **POOL2)
    c1 = sg.node("onednn.conv2d_bias_add", [p, sg.const(w1), sg.const(b1), p], [n, 16, 6, 6],
                 **CONV3)
    sg.output(c1)

    def ref(xv):
        r0 = np.maximum(conv2d(xv, w0, b0, (1, 1), (1, 1, 1, 1)), 0)
        rp = pool2d(r0, "max", (2, 2), (2, 2))
        return conv2d(rp, w1, b1, (1, 1), (1, 1, 1, 1)) + rp

    return sg, ref


def conv_input(batch, seed=10):
    return rand(batch, 8, 12, 12, seed=seed)


# ---------------------------------------------------------------- numerics


def test_conv_chain_symbolic_batch_matches_numpy_and_static():
    sg, ref = conv_chain()
    assert sg.doc()["version"] == 2
    mod = sg.build()
    for batch in (1, 3, 16):
        x = conv_input(batch, seed=batch)
        (out,) = call(sg, mod, [x], {"n": batch})
        assert out.shape == (batch, 16, 6, 6)
        assert_close(out, ref(x))
        static, _ = conv_chain(n=batch)
        assert static.doc()["version"] == 1
        (expected,) = call(static, static.build(), [x], {})
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    st = stats(mod)
    assert st["dynamic"] and st["symbols"] == ["n"]
    assert st["plans_cached"] == 3 and st["plans_built"] == 3 and st["calls"] == 3
    assert st["plan_symbol_values"] == {"n": 16}
    assert [n["op"] for n in kernel_info(mod)] == [n["op"] for n in sg.nodes]


def test_matmul_symbolic_batch_and_m_with_constant_b():
    K, N = 24, 20
    b = rand(K, N, seed=1, scale=0.3)
    bias = rand(N, seed=2)
    sg = Subgraph()
    a = sg.input(["n", "s", K])
    sg.output(sg.node("onednn.matmul_bias_relu", [a, sg.const(b), sg.const(bias)],
                      ["n", "s", N]))
    mod = sg.build()
    for n, s in ((1, 1), (2, 7), (5, 3), (2, 7)):
        av = rand(n, s, K, seed=n * 10 + s)
        (out,) = call(sg, mod, [av], {"n": n, "s": s})
        assert_close(out, np.maximum(np.matmul(av.astype(np.float64), b) + bias, 0))
    st = stats(mod)
    assert st["plans_cached"] == 3 and st["plans_built"] == 3 and st["calls"] == 4


def test_matmul_attention_like_runtime_b():
    h, d = 2, 8
    sg = Subgraph()
    q = sg.input(["n", h, "s", d])
    k = sg.input(["n", h, d, "s"])
    sg.output(sg.node("onednn.matmul", [q, k], ["n", h, "s", "s"]))
    mod = sg.build()
    for n, s in ((1, 5), (3, 9), (2, 1)):
        qv, kv = rand(n, h, s, d, seed=s), rand(n, h, d, s, seed=s + 1)
        (out,) = call(sg, mod, [qv, kv], {"n": n, "s": s})
        assert out.shape == (n, h, s, s)
        assert_close(out, np.matmul(qv.astype(np.float64), kv))


def int8_graph():
    """quantize (f32 -> u8) -> qconv2d_bias_relu (s8 out) -> dequantize, symbolic batch."""
    g = QGraph()
    c, o = 8, 16
    w = qweights((o, c, 3, 3), seed=3)
    x = g.input(["n", c, 10, 10], "float32")
    qx = g.node("onednn.quantize", [x], ["n", c, 10, 10], "uint8",
                {"dst_scale": 0.02, "dst_zero_point": 0})
    bias = np.random.default_rng(4).standard_normal(o).astype(np.float32)
    conv_q = {"src_scale": 0.02, "weight_scales": weight_scales(o, 5), "dst_scale": 0.05}
    qc = g.node("onednn.qconv2d_bias_relu", [qx, g.const(w), g.const(bias)], ["n", o, 10, 10],
                "int8", conv_q, **CONV3)
    g.output(g.node("onednn.dequantize", [qc], ["n", o, 10, 10], "float32",
                    {"src_scale": 0.05}))
    return g


def test_int8_quantize_qconv_dequantize_symbolic_batch():
    g = int8_graph()
    mod = g.build()
    scale = f32(0.05)
    for batch in (1, 3, 6):
        x = np.random.default_rng(batch).uniform(0, 5, (batch, 8, 10, 10)).astype(np.float32)
        (out,) = call(g, mod, [x], {"n": batch})
        (expected,) = reference(g, [x], roundings_of(mod))
        steps = np.abs(out - expected) / scale
        assert steps.max() <= 1.001, steps.max()
        assert (steps > 0.5).mean() <= 0.02
        assert len(np.unique(expected)) >= 8
    assert stats(mod)["plans_cached"] == 3


# ---------------------------------------------------------------- errors


def test_call_errors_are_precise():
    sg, _ = conv_chain()
    mod = sg.build()
    run = mod[sg.symbol]

    def expect(inputs, out_shape, match, exc=ValueError):
        args = [tvm.runtime.tensor(x) for x in inputs]
        out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
        with pytest.raises(exc, match=match):
            run(*args, out)

    expect([conv_input(2)[0]], (2, 16, 6, 6),
           r"onednn_0: input 0 has shape \[8,12,12\] \(3-D\), expected \[n,8,12,12\]")
    expect([rand(2, 4, 12, 12)], (2, 16, 6, 6),
           r"onednn_0: input 0 has shape \[2,4,12,12\], expected \[n,8,12,12\] \(dim 1\)$")
    expect([conv_input(2)], (3, 16, 6, 6),
           r"onednn_0: output 0 has shape \[3,16,6,6\], expected \[n,16,6,6\] "
           r"\(dim 0: n=2 from input 0\)")
    expect([conv_input(2)], (2, 16, 6, 5),
           r"output 0 has shape \[2,16,6,5\], expected \[n,16,6,6\] \(dim 3\)")
    expect([np.zeros((0, 8, 12, 12), "float32")], (0, 16, 6, 6),
           r"input 0 has shape \[0,8,12,12\], expected \[n,8,12,12\] "
           r"\(dim 0: symbol n must be >= 1\)")
    assert stats(mod)["calls"] == 0 and stats(mod)["plans_built"] == 0


def test_inconsistent_symbol_values_across_inputs():
    sg = Subgraph()
    q = sg.input(["n", 2, "s", 4])
    k = sg.input(["n", 2, 4, "s"])
    sg.output(sg.node("onednn.matmul", [q, k], ["n", 2, "s", "s"]))
    mod = sg.build()
    args = [tvm.runtime.tensor(rand(2, 2, 3, 4)), tvm.runtime.tensor(rand(3, 2, 4, 3)),
            tvm.runtime.tensor(np.zeros((2, 2, 3, 3), "float32"))]
    with pytest.raises(ValueError, match=r"onednn_0: symbol n is 2 in input 0 but 3 in input 1 "
                                         r"\(dim 0 of \[3,2,4,3\], declared \[n,2,4,s\]\)"):
        mod["onednn_0"](*args)
    args[1] = tvm.runtime.tensor(rand(2, 2, 4, 5))
    with pytest.raises(ValueError, match=r"symbol s is 3 in input 0 but 5 in input 1"):
        mod["onednn_0"](*args)


def _doc_error(doc, match):
    with pytest.raises(ValueError, match=match):
        _ffi_api.create_module(json.dumps(doc))


def test_parse_errors_are_precise():
    sg, _ = conv_chain()
    doc = sg.doc()

    v1 = json.loads(json.dumps(doc))
    v1["version"] = 1
    _doc_error(v1, r"onednn_0: input 0 shape\[0\] is the symbol 'n', but symbolic dimensions "
                   r"need \"version\": 2 \(the document has version 1\)")

    unbound = json.loads(json.dumps(doc))
    unbound["nodes"][1]["shape"][0] = "m"
    _doc_error(unbound, r"onednn_0: node 1 \(onednn.max_pool2d\): output shape\[0\] is the "
                        r"symbol 'm', which is not a dim of any region input")

    sym_c = json.loads(json.dumps(doc))
    sym_c["inputs"][0]["shape"][1] = "c"
    _doc_error(sym_c, r"node 0 \(onednn.conv2d_bias_relu\): data shape \[n,c,12,12\] has the "
                      r"symbolic dim 1 \(c\): only the batch dim N of a conv2d may be symbolic")

    const_sym = json.loads(json.dumps(doc))
    const_sym["constants"][0]["shape"][0] = "o"
    _doc_error(const_sym, r"constant 0 shape\[0\] is the symbol 'o', but constants must have "
                          r"static shapes")

    wrong_out = json.loads(json.dumps(doc))
    wrong_out["nodes"][0]["shape"][0] = 2
    _doc_error(wrong_out, r"declared output shape \[2,16,12,12\] does not match the shape "
                          r"\[n,16,12,12\]")


def test_matmul_parse_rules():
    def doc(a_shape, b_shape, out_shape, b_const):
        sg = Subgraph()
        a = sg.input(a_shape)
        b = sg.const(rand(*b_shape)) if b_const else sg.input(b_shape)
        sg.output(sg.node("onednn.matmul", [a, b], out_shape))
        return sg.doc()

    _doc_error(doc(["n", "k"], [8, 4], ["n", 4], True),
               r"reduction dims differ: a \[n,k\] has K=k, b \[8,4\] has K=8")
    _doc_error(doc(["n", 8, 3], ["m", 3, 5], ["n", 8, 5], False),
               r"batch dims of a \[n,8,3\] and b \[m,3,5\] differ")
    # a symbolic K and N are fine when b is a runtime input
    _ffi_api.create_module(json.dumps(doc(["n", "k"], ["k", "m"], ["n", "m"], False)))


# ---------------------------------------------------------------- the plan cache


def test_cache_capacity_evictions_and_weights_packed_once(plan_cache_size):
    plan_cache_size(2)
    sg, ref = conv_chain(seed=5)
    mod = sg.build()
    layouts = set()  # the weight layouts oneDNN picked, per plan
    for i, batch in enumerate((1, 2, 3, 4, 5, 1)):
        x = conv_input(batch, seed=batch)
        (out,) = call(sg, mod, [x], {"n": batch})
        assert_close(out, ref(x))
        layouts.add(tuple(n["weights_format"] for n in kernel_info(mod)))
        if i == 0:
            first = stats(mod)
    st = stats(mod)
    assert st["plan_cache_capacity"] == 2 and st["plans_cached"] == 2
    assert st["plans_built"] == 6  # batch 1 was evicted and came back
    assert st["plan_evictions"] == 4
    assert st["last_plan_build_ms"] > 0
    print(f"weight packs: first plan {first['weight_packs']}, after 6 plans {st['weight_packs']};"
          f" weight layouts per plan {sorted(layouts)}")
    assert first["weight_packs"] == first["init_reorders"] == 2  # the two conv weights
    assert st["weight_pack_cache_entries"] == st["weight_packs"]
    if len(layouts) == 1:  # the same layout for every batch: packed by the first plan only
        assert st["weight_packs"] == 2
        assert st["init_reorders"] == 0 and st["packs_reused"] == 2
    else:  # one pack per distinct layout of each conv
        assert st["weight_packs"] == sum(len({lay[k] for lay in layouts}) for k in (0, 2))


def test_plan_cache_size_setting():
    get = tvm.get_global_func("onednn.get_plan_cache_size")
    assert get() >= 1
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        tvm.get_global_func("onednn.set_plan_cache_size")(0)
    code = ("import tvm, tvm_onednn; print(tvm.get_global_func('onednn.get_plan_cache_size')())")
    env = dict(os.environ, TVM_ONEDNN_PLAN_CACHE_SIZE="7")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "7"
    env.pop("TVM_ONEDNN_PLAN_CACHE_SIZE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "16"
    env["TVM_ONEDNN_PLAN_CACHE_SIZE"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "TVM_ONEDNN_PLAN_CACHE_SIZE='lots' is not a positive integer" in out.stderr


def test_static_module_reports_one_plan():
    sg, ref = conv_chain(n=2)
    mod = sg.build()
    x = conv_input(2)
    (out,) = call(sg, mod, [x], {})
    assert_close(out, ref(x))
    st = stats(mod)
    assert not st["dynamic"] and st["symbols"] == []
    assert st["plans_cached"] == 1 and st["plans_built"] == 1 and st["plan_evictions"] == 0


def test_kernel_info_before_first_call_is_empty():
    sg, _ = conv_chain()
    mod = sg.build()
    assert kernel_info(mod) == []
    st = stats(mod)
    assert st["initialized"] and st["plans_cached"] == 0 and "steps_per_call" not in st


# ---------------------------------------------------------------- threads and memory


def test_threads_with_mixed_batch_sizes(plan_cache_size):
    plan_cache_size(3)  # fewer plans than batch sizes: entries are evicted while others run
    sg, _ = conv_chain(seed=7)
    mod = sg.build()
    inputs = {b: conv_input(b, seed=20 + b) for b in range(1, 9)}
    serial = {b: call(sg, mod, [inputs[b]], {"n": b})[0] for b in inputs}
    errors, results = [], {}

    def worker(t):
        try:
            for i in range(12):
                b = (t + i) % 8 + 1
                (out,) = call(sg, mod, [inputs[b]], {"n": b})
                results.setdefault(b, []).append(out)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for b, outs in results.items():
        for out in outs:
            np.testing.assert_array_equal(out, serial[b])
    st = stats(mod)
    assert st["calls"] == 8 + 8 * 12 and st["plans_cached"] <= 3


MEMORY_SCRIPT = """
import json, sys, numpy as np, tvm, tvm_onednn
doc, w = json.load(open(sys.argv[1])), np.load(sys.argv[2])
tvm.get_global_func("onednn.set_plan_cache_size")(4)
mod = tvm.get_global_func("onednn.create_module")(json.dumps(doc))
assert mod["__init_onednn_0"]([tvm.runtime.tensor(w)]) == 0

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

rss, worst = [], 0.0
for half in (range(1, 201, 2), range(2, 201, 2)):  # the same size range in both hundreds
    for batch in half:
        x = np.random.default_rng(batch).standard_normal((batch, 4, 8, 8)).astype("float32")
        out = tvm.runtime.tensor(np.full((batch, 8, 8, 8), np.nan, "float32"))
        mod["onednn_0"](tvm.runtime.tensor(x), out)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        ref = sum(np.einsum("nchw,oc->nohw", xp[:, :, i:i + 8, j:j + 8], w[:, :, i, j])
                  for i in range(3) for j in range(3))
        worst = max(worst, float(np.abs(out.numpy() - np.maximum(ref, 0)).max()))
    rss.append(rss_mib())
print(json.dumps({"rss": rss, "worst": worst, "stats": json.loads(mod["get_stats"]())}))
"""


def test_memory_is_bounded_over_many_batch_sizes(tmp_path):
    """200 batch sizes through one module with 4 cached plans: memory does not grow.

    Runs in a fresh process whose oneDNN primitive cache holds 8 entries: that process-wide
    cache (1024 primitives by default) would otherwise keep every batch size's kernels and
    dominate the measurement (about 8 MiB per hundred sizes here); it is bounded by itself.
    """
    sg = Subgraph()
    w = rand(8, 4, 3, 3, seed=1, scale=0.2)
    x = sg.input(["n", 4, 8, 8])
    sg.output(sg.node("onednn.conv2d_relu", [x, sg.const(w)], ["n", 8, 8, 8], **CONV3))
    (tmp_path / "doc.json").write_text(sg.json())
    np.save(tmp_path / "w.npy", w)
    env = dict(os.environ, ONEDNN_PRIMITIVE_CACHE_CAPACITY="8")
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "doc.json"),
                          str(tmp_path / "w.npy")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    (first, second), st = result["rss"], result["stats"]
    margin = 4.0  # a leaked plan of this model holds >= 100 KiB: 100 of them would be ~10+ MiB
    print(f"RSS after 100 batch sizes {first:.1f} MiB, after 200 {second:.1f} MiB "
          f"(growth {second - first:+.2f} MiB, margin {margin} MiB); plans cached "
          f"{st['plans_cached']}, evictions {st['plan_evictions']}, max |error| "
          f"{result['worst']:.2e}")
    assert result["worst"] < 1e-4
    assert st["plans_cached"] == 4 and st["plan_evictions"] == 196 and st["plans_built"] == 200
    assert second - first <= margin


# ---------------------------------------------------------------- serialization


def test_save_load_round_trip_in_a_fresh_process(tmp_path):
    sg, ref = conv_chain(seed=9)
    mod = sg.build()
    call(sg, mod, [conv_input(2)], {"n": 2})
    blob = tvm.get_global_func("onednn.module_save_to_bytes")(mod)
    path = tmp_path / "module.bin"
    path.write_bytes(bytes(blob))
    np.savez(tmp_path / "consts.npz", *sg.const_values)
    xs = [conv_input(1, seed=31), conv_input(5, seed=35)]
    for i, x in enumerate(xs):
        np.save(tmp_path / f"x{i}.npy", x)
    script = f"""
import json, numpy as np, tvm, tvm_onednn
load = tvm.get_global_func("ffi.Module.load_from_bytes.onednn_json")
mod = load(open({str(path)!r}, "rb").read())
consts = np.load({str(tmp_path / "consts.npz")!r})
consts = [consts[f"arr_{{i}}"] for i in range(len(consts.files))]
assert mod["__init_onednn_0"]([tvm.runtime.tensor(c) for c in consts]) == 0
assert json.loads(mod["get_stats"]())["plans_cached"] == 0
for i in range(2):
    x = np.load({str(tmp_path)!r} + f"/x{{i}}.npy")
    out = tvm.runtime.tensor(np.full((x.shape[0], 16, 6, 6), np.nan, "float32"))
    mod["onednn_0"](tvm.runtime.tensor(x), out)
    np.save({str(tmp_path)!r} + f"/out{{i}}.npy", out.numpy())
print(json.loads(mod["get_stats"]())["plans_cached"])
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=os.getcwd())
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "2"
    for i, x in enumerate(xs):
        assert_close(np.load(tmp_path / f"out{i}.npy"), ref(x))
