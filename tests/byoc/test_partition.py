"""Partitioning: which chains form regions, region names, reasons for what stays with TVM."""

import numpy as np
from tvm import relax

import tvm_onednn
from tvm_onednn.byoc.partition import partition_for_onednn

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
