"""The int8 pattern table and the int8 JSON nodes (docs/subgraph-format.md, "int8 nodes")."""

import functools
import logging
import re

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_onednn.byoc.partition import (
    inline_light_regions,
    inline_shape_arguments,
    name_regions,
    partition_for_onednn,
    prepare_for_onednn,
)
from tvm_onednn.byoc.patterns import composite_names, offload_pattern_table
from tvm_onednn.byoc.qpatterns import qcomposite_names
from tvm_onednn.byoc.summary import summarize_partitioned
from tvm_onednn.quantize import quantize
from tvm_onednn.testing import Runner, build

from ..byoc.builders import conv2d_module
from .helpers import FixedRanges, assert_int8_close, regions, run_int8_region
from .models import conv_pool_net, mlp, residual_block, small_cnn

BLOCK_RANGES = {"conv2d_0_input": (-2.54, 1.0), "conv2d_0_output": (0.0, 2.55)}


def _block_qmod(**kwargs):
    model = residual_block()
    collector = FixedRanges(BLOCK_RANGES)
    qmod = quantize(model.mod, model.batches(1), calib_mode="custom", collector=collector, **kwargs)
    return model, qmod


def test_qcomposite_names_follow_the_format_doc():
    acts = "relu|clip|sigmoid|tanh|gelu|gelu_tanh|silu|hardswish|leaky_relu"
    chain = re.compile(rf"onednn\.q(conv2d|matmul)(_bias)?(_add)?(_({acts}))?")
    pools = {"onednn.qmax_pool2d", "onednn.qavg_pool2d", "onednn.qglobal_avg_pool2d"}
    names = qcomposite_names()
    assert len(names) == len(set(names)) == 2 * 4 * 10 + 3 + 2
    for name in names:
        assert chain.fullmatch(name) or name in pools | {"onednn.quantize", "onednn.dequantize"}
    assert not set(names) & set(composite_names())


def test_residual_block_json_nodes(vnni_cpu):
    model, qmod = _block_qmod()
    (region,) = regions(qmod)
    quantize_node, conv0, conv1 = region.nodes
    assert region.ops() == [
        "onednn.quantize",
        "onednn.qconv2d_bias_relu",
        "onednn.qconv2d_bias_add_relu",
    ]
    assert [n["dtype"] for n in region.nodes] == ["int8", "uint8", "float32"]
    assert quantize_node["inputs"] == [["input", 0]]
    assert quantize_node["quant"] == pytest.approx({"dst_scale": 0.02, "dst_zero_point": 0})
    # Operands: the int8 data, the int8 weight constant, the f32 bias [, the int8 residual].
    assert conv0["inputs"] == [["node", 0], ["const", 0], ["const", 1]]
    assert conv1["inputs"] == [["node", 1], ["const", 2], ["const", 3], ["node", 0]]
    assert conv0["attrs"] == {
        "strides": [1, 1],
        "padding": [1, 1, 1, 1],
        "dilation": [1, 1],
        "groups": 1,
    }
    constants = region.doc["constants"]
    assert [(c["dtype"], c["shape"]) for c in constants] == [
        ("int8", [8, 8, 3, 3]),
        ("float32", [1, 8, 1, 1]),
    ] * 2
    for node, w in ((conv0, model.weights["w0"]), (conv1, model.weights["w1"])):
        expected = np.abs(w).max(axis=(1, 2, 3)) / 127
        np.testing.assert_allclose(node["quant"].pop("weight_scales"), expected, rtol=1e-6)
        w_q = region.const_values[node["inputs"][1][1]]
        np.testing.assert_array_equal(w_q, np.round(w / expected.reshape(-1, 1, 1, 1)))
    assert conv0["quant"] == pytest.approx(
        {"src_scale": 0.02, "src_zero_point": 0, "dst_scale": 0.01, "dst_zero_point": 0}
    )
    # The last layer writes float32: no dst scale; its residual is x's int8 tensor.
    assert conv1["quant"] == pytest.approx(
        {"src_scale": 0.01, "src_zero_point": 0, "residual_scale": 0.02, "residual_zero_point": 0}
    )


def test_tensor_wise_json_has_one_weight_scale(vnni_cpu):
    model, qmod = _block_qmod(quantize_granularity="tensor-wise")
    (region,) = regions(qmod)
    scales = region.nodes[1]["quant"]["weight_scales"]
    assert scales == pytest.approx([np.abs(model.weights["w0"]).max() / 127])


def test_float32_residual_is_added_as_is():
    mod, inputs = conv2d_module(bias=True, add=True, activation="relu")
    qmod = quantize(mod, [inputs])
    (region,) = regions(qmod)
    node = region.nodes[-1]
    assert node["op"] == "onednn.qconv2d_bias_add_relu"
    assert node["inputs"][-1] == ["input", 1]  # the float32 residual input
    assert "residual_scale" not in node["quant"] and "dst_scale" not in node["quant"]


def test_matmul_chain_json():
    model = mlp()
    qmod = quantize(model.mod, model.batches(2), calib_mode="entropy")  # static ranges
    (region,) = regions(qmod)
    assert region.ops() == [
        "onednn.quantize",
        "onednn.qmatmul_bias_relu",
        "onednn.qmatmul_bias_add_gelu",
        "onednn.qmatmul",
    ]
    first = region.nodes[1]
    assert region.doc["constants"][first["inputs"][1][1]]["shape"] == [16, 32]  # [K, N]
    assert len(first["quant"]["weight_scales"]) == 32  # per N
    # The residual (the first layer's u8 output) is read in int8.
    assert region.nodes[2]["inputs"][-1] == ["node", 1]
    assert region.nodes[2]["quant"]["residual_scale"] == region.nodes[1]["quant"]["dst_scale"]


@functools.cache
def _quantized(make):
    """(model, QDQ module, its fake-quant build), shared by the tests of one model."""
    model = make()
    qmod = quantize(model.mod, model.batches(4), calib_mode="entropy")
    return model, qmod, Runner(build(qmod, "default"))


@pytest.mark.parametrize("make", [residual_block, conv_pool_net, mlp])
def test_int8_json_executes_like_the_fake_quant_module(make):
    """A numpy executor of the JSON, written from the format doc, vs TVM's QDQ build."""
    model, qmod, fake_quant = _quantized(make)
    (region,) = regions(qmod)
    for x in model.batches(2, seed=5):
        (actual,) = run_int8_region(region, [x])
        assert_int8_close(actual, fake_quant(x))


def _qconv_module(src_zp=0, in_dtype="int8", per_channel_src=False, weight_param=False):
    """dequantize(x_q) -> conv2d(., dequantize(w_q)) -> relu, written by hand."""
    rng = np.random.default_rng(0)
    w_q = rng.integers(-127, 128, (4, 4, 3, 3)).astype("int8")
    x = relax.Var("x", relax.TensorType([1, 4, 6, 6], in_dtype))
    params = [x]
    if weight_param:
        w = relax.Var("w", relax.TensorType([4, 4, 3, 3], "int8"))
        params.append(w)
    else:
        w = relax.const(w_q)
    src_scale = (
        relax.const(np.full((4,), 0.1, "float32"))
        if per_channel_src
        else relax.const(np.float32(0.1))
    )
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            d = bb.emit(relax.op.dequantize(x, src_scale, relax.const(src_zp, in_dtype), axis=1))
            wd = bb.emit(
                relax.op.dequantize(
                    w, relax.const(np.full((4,), 0.01, "float32")), relax.const(0, "int8"), axis=0
                )
            )
            c = bb.emit(relax.op.nn.conv2d(d, wd, padding=1))
            gv = bb.emit_output(relax.op.nn.relu(c))
        bb.emit_func_output(gv)
    return bb.finalize()


def test_hand_written_qdq_chain_is_fused():
    summary = summarize_partitioned(partition_for_onednn(_qconv_module()))
    assert summary.composites == {"onednn.qconv2d_relu": 1}


def test_residual_add_is_fused_whichever_side_the_chain_is_on():
    """``add(p, c2)`` where ``p`` (another chain's output, also read elsewhere) comes first."""
    rng = np.random.default_rng(0)

    def qconv(bb, x_q, scale):
        w = relax.const(rng.integers(-127, 128, (4, 4, 3, 3)).astype("int8"))
        x = bb.emit(
            relax.op.dequantize(x_q, relax.const(np.float32(scale)), relax.const(0, "int8"))
        )
        wd = bb.emit(
            relax.op.dequantize(
                w, relax.const(np.full((4,), 0.01, "float32")), relax.const(0, "int8"), axis=0
            )
        )
        c = bb.emit(relax.op.nn.conv2d(x, wd, padding=1))
        return bb.emit(relax.op.add(c, relax.const(np.zeros((1, 4, 1, 1), "float32"))))

    x_q = relax.Var("x_q", relax.TensorType([1, 4, 6, 6], "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x_q]):
        with bb.dataflow():
            p = qconv(bb, x_q, 0.1)
            p_q = bb.emit(
                relax.op.quantize(
                    p, relax.const(np.float32(0.05)), relax.const(0, "int8"), out_dtype="int8"
                )
            )
            c2 = qconv(bb, p_q, 0.05)
            gv = bb.emit_output(relax.op.add(p, c2))
        bb.emit_func_output(gv)
    summary = summarize_partitioned(partition_for_onednn(bb.finalize()))
    assert summary.composites == {
        "onednn.qconv2d_bias": 1,
        "onednn.quantize": 1,
        "onednn.qconv2d_bias_add": 1,
    }


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"src_zp": 300, "in_dtype": "int32"}, "input dtype int32 is not one of"),
        ({"in_dtype": "int16"}, "input dtype int16 is not one of"),
        ({"per_channel_src": True}, "input scale must be one value per tensor"),
        ({"weight_param": True}, "weights are packed once at init, so they must be constants"),
    ],
)
def test_chains_the_runtime_cannot_run_are_rejected_with_a_reason(kwargs, reason, caplog):
    with caplog.at_level(logging.DEBUG, logger="tvm_onednn.byoc.qpatterns"):
        summary = summarize_partitioned(partition_for_onednn(_qconv_module(**kwargs)))
    assert not any(name.startswith("onednn.q") for name in summary.composites)
    assert f"onednn.qconv2d_relu rejected: {reason}" in caplog.text


def test_run_time_scales_stay_with_tvm(caplog):
    qmod = quantize(residual_block().mod, calib_mode="none")
    with caplog.at_level(logging.DEBUG, logger="tvm_onednn.byoc.qpatterns"):
        summary = summarize_partitioned(partition_for_onednn(qmod))
    assert "input scale must be a constant" in caplog.text
    assert not any(name.startswith("onednn.q") for name in summary.composites)
    # The constant weights are folded to float32 and the convs still run in oneDNN.
    assert summary.composites == {"onednn.conv2d_bias_relu": 1, "onednn.conv2d_bias_add_relu": 1}
    assert summary.kept_ops["relax.quantize"] == 2


def _legacy_partition(mod):
    """partition_for_onednn as it was before the int8 table existed."""
    mod = prepare_for_onednn(mod)
    mod = relax.transform.FuseOpsByPattern(
        offload_pattern_table(), bind_constants=True, annotate_codegen=False
    )(mod)
    mod = relax.transform.MergeCompositeFunctions()(inline_shape_arguments(mod))
    return name_regions(inline_light_regions(mod))


@pytest.mark.parametrize("make", [lambda: small_cnn().mod, lambda: conv2d_module(add=True)[0]])
def test_float32_partition_is_unchanged(make):
    mod = make()
    tvm.ir.assert_structural_equal(partition_for_onednn(mod), _legacy_partition(mod))


@pytest.mark.parametrize("make", [residual_block, conv_pool_net, mlp, small_cnn])
def test_runtime_int8_matches_fake_quant(make):
    model, qmod, fake_quant = _quantized(make)
    int8 = Runner(build(qmod, "onednn"))
    for x in model.batches(2, seed=5):
        assert_int8_close(int8(x), fake_quant(x))
