"""Globals, module function table, validation errors, argument checks, serialization."""

import copy
import json

import numpy as np
import pytest
import tvm

from runtime_utils import Subgraph, init_region, rand, run, run_graph, stats
from tvm_onednn import _ffi_api

CONV3 = dict(strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)


def small_graph(symbol="onednn_0"):
    x = rand(1, 4, 8, 8)
    w, b = rand(8, 4, 3, 3, scale=0.2), rand(8)
    sg = Subgraph(symbol)
    n0 = sg.node("onednn.conv2d_bias_relu", [sg.input(x.shape), sg.const(w), sg.const(b)],
                 (1, 8, 8, 8), **CONV3)
    sg.output(sg.node("onednn.max_pool2d", [n0], (1, 8, 4, 4), pool_size=[2, 2],
                      strides=[2, 2], padding=[0, 0, 0, 0], dilation=[1, 1], ceil_mode=False))
    return sg, [x]


# ---------------------------------------------------------------- globals


def test_version_and_threads():
    assert _ffi_api.version().startswith("3.")
    assert _ffi_api.subgraph_format_version() == 2  # version 2: symbolic dims
    old = _ffi_api.get_num_threads()
    assert old >= 1
    _ffi_api.set_num_threads(1)
    assert _ffi_api.get_num_threads() == 1
    sg, inputs = small_graph()
    run_graph(sg, inputs)
    _ffi_api.set_num_threads(old)
    assert _ffi_api.get_num_threads() == old
    with pytest.raises(ValueError):
        _ffi_api.set_num_threads(-1)


def test_supported_composites_is_the_exact_table():
    names = _ffi_api.supported_composites()
    # 83 float32 conv/matmul/pool names, the same 83 with "q" before the base op (int8),
    # quantize, dequantize; then the transformer ops: layer_norm, softmax, 6 activations,
    # 6 binaries x (no activation + 9 activations), reshape, transpose
    transformer = 2 + 6 + 6 * 10 + 2
    assert len(names) == len(set(names)) == 2 * (2 * 2 * 2 * 10 + 3) + 2 + transformer
    assert names[:83] == [n for n in names[:168] if not n.startswith("onednn.q")
                          and n not in ("onednn.dequantize",)]
    assert names[168:170] == ["onednn.layer_norm", "onednn.softmax"]
    assert "onednn.add_gelu" in names and "onednn.divide" in names
    assert "onednn.conv2d_bias_add_relu" in names
    assert "onednn.matmul_gelu_tanh" in names
    assert "onednn.global_avg_pool2d" in names
    assert "onednn.conv2d_relu_bias" not in names  # fixed chain order


def test_module_function_table():
    sg, inputs = small_graph("my_region")
    mod = sg.build(init=False)
    assert mod.kind == "onednn_json"
    assert mod["get_symbol"]() == "my_region"
    assert list(mod["get_const_vars"]()) == [c["name"] for c in sg.constants]
    assert json.loads(mod["get_json"]()) == sg.doc()
    assert mod.implements_function("__init_my_region")
    assert mod.implements_function("my_region")
    assert not mod.implements_function("other")
    assert mod.is_binary_serializable() and mod.is_runnable()


# ---------------------------------------------------------------- validation


def _doc_error(mutate, match):
    sg, _ = small_graph()
    doc = copy.deepcopy(sg.doc())
    mutate(doc)
    with pytest.raises(ValueError, match=match):
        _ffi_api.create_module(json.dumps(doc))


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(version=3), "unsupported subgraph format version 3"),
    (lambda d: d.update(version=0), "unsupported subgraph format version 0"),
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.pop("nodes"), 'missing required field "nodes"'),
    (lambda d: d["nodes"][0].update(op="onednn.conv2d_swish"), "unknown op 'onednn.conv2d_swish'"),
    (lambda d: d["nodes"][0].update(op="conv2d_bias_relu"), "unknown op"),
    (lambda d: d["nodes"][0]["inputs"].pop(), "expects 3 operands, got 2"),
    (lambda d: d["nodes"][0]["inputs"].__setitem__(1, ["const", 7]),
     r"references const 7, out of range \[0, 2\)"),
    (lambda d: d["nodes"][0]["inputs"].__setitem__(0, ["node", 1]), "topological"),
    (lambda d: d["nodes"][0]["inputs"].__setitem__(0, ["weird", 0]), "unknown kind 'weird'"),
    (lambda d: d["outputs"].__setitem__(0, ["node", 5]), "output 0 references node 5"),
    (lambda d: d["nodes"][0].update(shape=[1, 8, 7, 7]),
     r"declared output shape \[1,8,7,7\] does not match the shape \[1,8,8,8\]"),
    (lambda d: d["inputs"][0].update(shape=[1, 5, 8, 8]), "channels"),
    (lambda d: d["constants"][1].update(shape=[9]), r"bias has shape \[9\]"),
    (lambda d: d["inputs"][0].update(dtype="int8"), "dtype 'int8'.*not supported"),
    (lambda d: d["inputs"][0].update(dtype="float33"), "unknown dtype 'float33'"),
    (lambda d: d["nodes"][0]["attrs"].update(groups=3), "groups"),
    (lambda d: d["nodes"][0]["attrs"].update(strides=[1]), "strides must have 2 entries"),
    (lambda d: d["nodes"][0]["attrs"].pop("padding"), 'missing required field "padding"'),
    (lambda d: d["nodes"][0]["attrs"].update(data_layout="NHWC"), "only 'NCHW'"),
    (lambda d: d["nodes"][1]["attrs"].update(ceil_mode="yes"), "ceil_mode must be a bool"),
    (lambda d: d.update(symbol=""), "symbol"),
    (lambda d: d.update(outputs=[]), "outputs"),
])
def test_invalid_documents(mutate, match):
    _doc_error(mutate, match)


def test_invalid_json_text():
    with pytest.raises(ValueError, match="invalid JSON"):
        _ffi_api.create_module("{not json")
    with pytest.raises(ValueError, match="must be a JSON object"):
        _ffi_api.create_module("[1, 2]")


def test_clip_requires_bounds_and_matmul_shapes_checked():
    sg = Subgraph()
    sg.output(sg.node("onednn.matmul_clip", [sg.input((2, 3)), sg.const(rand(3, 4))], (2, 4)))
    with pytest.raises(ValueError, match="clip_min"):
        sg.build()
    sg = Subgraph()
    sg.output(sg.node("onednn.matmul", [sg.input((2, 3)), sg.const(rand(5, 4))], (2, 4)))
    with pytest.raises(ValueError, match="reduction dims differ"):
        sg.build()


# ---------------------------------------------------------------- init / call checks


def test_call_before_init_is_an_error():
    sg, inputs = small_graph()
    mod = sg.build(init=False)
    with pytest.raises(RuntimeError, match="not initialized.*__init_onednn_0"):
        run(mod, sg.symbol, inputs, sg.output_shapes())
    with pytest.raises(RuntimeError, match="not initialized"):
        mod["get_kernel_info"]()
    assert stats(mod)["initialized"] is False


def test_region_without_constants_initializes_lazily():
    x = rand(1, 4, 6, 6)
    sg = Subgraph()
    sg.output(sg.node("onednn.global_avg_pool2d", [sg.input(x.shape)], (1, 4, 1, 1)))
    mod = sg.build(init=False)
    (out,) = run(mod, sg.symbol, [x], sg.output_shapes())
    np.testing.assert_allclose(out, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)


def test_init_checks_constants():
    sg, _ = small_graph()
    mod = sg.build(init=False)
    with pytest.raises(ValueError, match="got 1 constant"):
        init_region(mod, sg.symbol, sg.const_values[:1])
    bad = [sg.const_values[0], np.zeros(7, "float32")]
    with pytest.raises(ValueError, match=r"constant 1 .* has shape \[7\], expected \[8\]"):
        init_region(mod, sg.symbol, bad)
    bad = [sg.const_values[0].astype("float64"), sg.const_values[1]]
    with pytest.raises(TypeError, match="constant 0 .* has dtype float64, expected float32"):
        init_region(mod, sg.symbol, bad)
    init_region(mod, sg.symbol, sg.const_values)  # a failed init can be retried


def test_call_argument_checks():
    sg, inputs = small_graph()
    mod = sg.build()
    f = mod[sg.symbol]
    x = tvm.runtime.tensor(inputs[0])
    out = tvm.runtime.tensor(np.zeros((1, 8, 4, 4), "float32"))
    with pytest.raises(TypeError, match=r"expects 2 arguments \(1 input\(s\) \+ 1 output\(s\)\), got 1"):
        f(x)
    with pytest.raises(ValueError, match=r"onednn_0: input 0 has shape \[1,4,8,9\], expected \[1,4,8,8\]"):
        f(tvm.runtime.tensor(np.zeros((1, 4, 8, 9), "float32")), out)
    with pytest.raises(ValueError, match=r"input 0 has shape \[4,8,8\] \(3-D\)"):
        f(tvm.runtime.tensor(np.zeros((4, 8, 8), "float32")), out)
    with pytest.raises(TypeError, match="input 0 has dtype float64, expected float32"):
        f(tvm.runtime.tensor(np.zeros((1, 4, 8, 8), "float64")), out)
    with pytest.raises(TypeError, match="input 0 has dtype int32"):
        f(tvm.runtime.tensor(np.zeros((1, 4, 8, 8), "int32")), out)
    with pytest.raises(ValueError, match=r"output 0 has shape \[1,8,4,5\]"):
        f(x, tvm.runtime.tensor(np.zeros((1, 8, 4, 5), "float32")))
    with pytest.raises(TypeError, match="input 0 must be a Tensor"):
        f(3, out)
    f(x, out)  # still fine after all those errors


# ---------------------------------------------------------------- serialization


def test_save_load_round_trip():
    sg, inputs = small_graph()
    mod = sg.build()
    (expected,) = run_graph(sg, inputs, mod)
    data = _ffi_api.save_to_bytes(mod)
    assert data[:8] == b"TVMONEDN"
    loaded = _ffi_api.load_from_bytes(data)
    assert loaded.kind == "onednn_json"
    assert loaded["get_json"]() == mod["get_json"]()
    assert list(loaded["get_const_vars"]()) == list(mod["get_const_vars"]())
    init_region(loaded, sg.symbol, sg.const_values)  # constants are owned by const_loader
    (out,) = run_graph(sg, inputs, loaded)
    np.testing.assert_array_equal(out, expected)
    # through the generic loader lookup as tvm does for exported libraries
    loader = tvm.get_global_func("ffi.Module.load_from_bytes.onednn_json")
    assert loader(data)["get_symbol"]() == sg.symbol


@pytest.mark.parametrize("corrupt,match", [
    (lambda d: b"definitely not a oneDNN module", "bad magic"),
    (lambda d: d[:10], "truncated header"),
    (lambda d: d[:-5], "truncated or corrupt"),
    (lambda d: d + b"xx", "truncated or corrupt"),
    (lambda d: d[:8] + b"\x07" + d[9:], "unsupported serialization version 7"),
    (lambda d: d[:20] + b"#" + d[21:], "invalid JSON"),
    (lambda d: b"", "truncated header"),
])
def test_corrupt_bytes_are_rejected(corrupt, match):
    sg, _ = small_graph()
    data = _ffi_api.save_to_bytes(sg.build(init=False))
    with pytest.raises(ValueError, match=match):
        _ffi_api.load_from_bytes(corrupt(data))


def test_double_import_is_harmless():
    import importlib

    import tvm_onednn._ffi_api as api

    importlib.reload(api)
    assert api.version() == _ffi_api.version()
