"""Partitioning: which chains form regions, region names, reasons for what stays with TVM."""

import numpy as np
import tvm_ffi
from tvm import relax, topi

import tvm_onednn
from tvm_onednn.byoc.partition import partition_for_onednn
from tvm_onednn.byoc.summary import OUTSIDE_DATAFLOW
from tvm_onednn.testing import Runner, build

from .builders import conv2d_module


def _regions(mod):
    return sorted(
        gv.name_hint
        for gv, f in mod.functions.items()
        if f.attrs is not None and f.attrs.get("Codegen") == "onednn"
    )


def _conv_chain_module(leak_intermediate=False, layout="NCHW"):
    bb = relax.BlockBuilder()
    shape = [1, 8, 10, 10] if layout == "NCHW" else [1, 10, 10, 8]
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    rng = np.random.default_rng(0)
    w = relax.const(rng.standard_normal((8, 8, 3, 3)).astype("float32"))
    kernel_layout = "OIHW" if layout == "NCHW" else "HWIO"
    if layout != "NCHW":
        w = relax.const(rng.standard_normal((3, 3, 8, 8)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = bb.emit(
                relax.op.nn.conv2d(
                    x, w, padding=1, data_layout=layout, kernel_layout=kernel_layout
                )
            )
            act = bb.emit(relax.op.nn.relu(conv))
            conv2 = bb.emit(
                relax.op.nn.conv2d(
                    act, w, padding=1, data_layout=layout, kernel_layout=kernel_layout
                )
            )
            out = bb.emit(relax.op.nn.relu(conv2))
            result = relax.Tuple([out, conv]) if leak_intermediate else out
            gv = bb.emit_output(result)
        bb.emit_func_output(gv)
    return bb.finalize()


def test_neighbouring_composites_merge_into_one_region():
    mod = partition_for_onednn(_conv_chain_module())
    assert _regions(mod) == ["onednn_0"]
    summary = tvm_onednn.offload_summary(_conv_chain_module())
    assert summary.composites == {"onednn.conv2d_relu": 2}
    assert summary.kept_ops == {}


def test_leaked_intermediate_is_not_fused_away():
    summary = tvm_onednn.offload_summary(_conv_chain_module(leak_intermediate=True))
    # The first conv's raw output is returned, so relu cannot be fused into it.
    assert summary.composites["onednn.conv2d"] == 1
    assert summary.composites["onednn.conv2d_relu"] == 1


def test_unsupported_layout_stays_with_tvm_and_says_why():
    summary = tvm_onednn.offload_summary(_conv_chain_module(layout="NHWC"))
    assert summary.regions == 0
    assert summary.kept_ops["relax.nn.conv2d"] == 2
    assert "runtime takes NCHW data with OIHW weights" in summary.reasons["relax.nn.conv2d"]
    assert "NCHW" in str(summary)


def test_partition_returns_new_module_and_keeps_input():
    mod, _ = conv2d_module()
    before = mod.script(show_meta=False)
    partitioned = partition_for_onednn(mod)
    assert mod.script(show_meta=False) == before
    assert _regions(partitioned) == ["onednn_0"]
    assert relax.analysis.check_well_formed(partitioned)


def test_non_constant_conv_weight_stays_with_tvm():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 6, 6], "float32"))
    w = relax.Var("w", relax.TensorType([4, 4, 3, 3], "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            gv = bb.emit_output(bb.emit(relax.op.nn.conv2d(x, w)))
        bb.emit_func_output(gv)
    summary = tvm_onednn.offload_summary(bb.finalize())
    assert summary.regions == 0
    assert any("constants" in r for r in summary.reasons["relax.nn.conv2d"])


def test_float16_stays_with_tvm():
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([4, 8], "float16"))
    with bb.function("main", [a]):
        with bb.dataflow():
            b = relax.const(np.ones((8, 4), "float16"))
            gv = bb.emit_output(bb.emit(relax.op.matmul(a, b)))
        bb.emit_func_output(gv)
    summary = tvm_onednn.offload_summary(bb.finalize())
    assert summary.regions == 0
    assert any("float16" in r for r in summary.reasons["relax.matmul"])


def test_residual_add_fuses_with_residual_on_either_side():
    """add(residual, conv) must fuse even when the residual is itself a conv output."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 6, 6], "float32"))
    rng = np.random.default_rng(0)

    def conv(data):
        weight = relax.const(rng.standard_normal((8, 8, 1, 1)).astype("float32"))
        return bb.emit(relax.op.nn.conv2d(data, weight))

    with bb.function("main", [x]):
        with bb.dataflow():
            first = conv(x)  # also feeds the next conv: cannot be the fused chain here
            second = conv(first)
            total = bb.emit(relax.op.add(first, second))
            gv = bb.emit_output(conv(total))
        bb.emit_func_output(gv)
    summary = tvm_onednn.offload_summary(bb.finalize())
    assert summary.composites == {"onednn.conv2d": 2, "onednn.conv2d_add": 1}, str(summary)
    assert summary.kept_ops == {}


def _conv_pad_module():
    """A conv whose input goes through a ``call_tir`` (as ONNX auto_pad SAME imports)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    w = relax.const(np.random.default_rng(2).standard_normal((4, 4, 3, 3)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            padded = bb.emit_te(topi.nn.pad, x, [0, 0, 1, 1], [0, 0, 1, 1], primfunc_name_hint="pad")
            conv = bb.emit(relax.op.nn.conv2d(padded, w))
            gv = bb.emit_output(relax.op.nn.relu(conv))
        bb.emit_func_output(gv)
    return bb.finalize()


def test_partition_keeps_the_functions_main_calls():
    mod = _conv_pad_module()
    partitioned = partition_for_onednn(mod)
    assert _regions(partitioned) == ["onednn_0"]
    assert "pad" in [gv.name_hint for gv in partitioned.get_global_vars()]
    relax.analysis.well_formed(partitioned)  # raises on a violation
    x = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype("float32")
    expected = Runner(build(mod, "default"))(x)
    np.testing.assert_allclose(Runner(build(mod))(x), expected, rtol=1e-5, atol=1e-5)


def _twin_blocks_module(blocks: int):
    """``blocks`` identical conv+relu blocks separated by a TVM op (identical regions)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    w = relax.const(np.random.default_rng(4).standard_normal((4, 4, 1, 1)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = x
            for _ in range(blocks):
                out = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(out, w)))
                out = bb.emit(relax.op.exp(relax.op.negative(out)))
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.finalize()


def test_summary_counts_call_sites_of_shared_regions():
    partitioned = partition_for_onednn(_twin_blocks_module(3))
    # Identical regions share one function; the summary counts each call of it.
    assert len(_regions(partitioned)) == 1
    summary = tvm_onednn.offload_summary(_twin_blocks_module(3))
    assert summary.regions == 3
    assert summary.composites == {"onednn.conv2d_relu": 3}
    assert summary.offloaded_ops["relax.nn.conv2d"] == 3


@tvm_ffi.register_global_func("tests.partition.double", override=True)
def _double(x, out):
    out.copyfrom(x.numpy() * 2)


def _extern_then_matmul_module():
    """``main`` calls a packed function (TVM's MergeCompositeFunctions rejects that)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, 8], "float32"))
    w = relax.const(np.random.default_rng(6).standard_normal((8, 8)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            doubled = bb.emit(
                relax.call_dps_packed(
                    "tests.partition.double", (x,), relax.TensorType([4, 8], "float32")
                )
            )
            hidden = bb.emit(relax.op.nn.relu(relax.op.matmul(doubled, w)))
            gv = bb.emit_output(relax.op.nn.relu(relax.op.matmul(hidden, w)))
        bb.emit_func_output(gv)
    return bb.finalize()


def test_modules_merge_rejects_still_offload():
    mod = _extern_then_matmul_module()
    partitioned = partition_for_onednn(mod)
    relax.analysis.well_formed(partitioned)
    assert tvm_onednn.offload_summary(mod).composites == {"onednn.matmul_relu": 2}
    x = np.random.default_rng(7).standard_normal((4, 8)).astype("float32")
    expected = Runner(build(mod, "default"))(x)
    np.testing.assert_allclose(Runner(build(mod))(x), expected, rtol=1e-5, atol=1e-5)


def test_a_block_output_inside_a_chain_is_not_fused_away():
    """``y = conv(x)`` is a dataflow-block output used after the block: relu cannot absorb it
    (it runs as a standalone node of the conv's region)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    w = relax.const(np.random.default_rng(8).standard_normal((4, 4, 3, 3)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, w, padding=1))
            z = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(relax.Tuple([y, z]))
    mod = bb.finalize()
    assert tvm_onednn.offload_summary(mod).composites == {"onednn.conv2d": 1, "onednn.relu": 1}
    x_in = np.random.default_rng(9).standard_normal((1, 4, 8, 8)).astype("float32")
    for actual, expected in zip(Runner(build(mod))(x_in), Runner(build(mod, "default"))(x_in)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_summary_says_when_an_op_is_outside_a_dataflow_block():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, 8], "float32"))
    w = relax.const(np.random.default_rng(10).standard_normal((8, 8)).astype("float32"))
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nn.relu(relax.op.matmul(x, w)))
        bb.emit_func_output(out)
    summary = tvm_onednn.offload_summary(bb.finalize())
    assert summary.composites == {}
    assert set(summary.reasons["relax.matmul"]) == {OUTSIDE_DATAFLOW}
