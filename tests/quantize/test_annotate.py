"""Annotate: layer names, what is quantized and why not, the tensors that need ranges."""

import re

import pytest

from tvm_onednn.byoc.partition import prepare_for_onednn
from tvm_onednn.quantize import plan_quantization, quantizable_layers

from ..byoc.builders import conv2d_module, matmul_module
from .models import nhwc_conv, residual_block, small_cnn


def _plan(model, **exclusions):
    return plan_quantization(prepare_for_onednn(model.mod), **exclusions)


def _layers(plan):
    return {l.name: l for l in plan.layers}


def test_layer_names_follow_graph_order_per_kind():
    layers = quantizable_layers(small_cnn().mod)
    assert layers.names() == [
        "conv2d_0",
        "max_pool2d_0",
        "conv2d_1",
        "conv2d_2",
        "global_avg_pool2d_0",
        "matmul_0",
    ]
    assert [l.chain for l in layers] == [
        "onednn.conv2d_bias_relu",
        "onednn.max_pool2d",
        "onednn.conv2d_bias_relu",
        "onednn.conv2d_bias_add_relu",
        "onednn.global_avg_pool2d",
        "onednn.matmul_bias",
    ]
    assert all(l.quantized for l in layers)
    # The last quantized layer (its user is the model output) writes float32.
    assert [l.output_dtype for l in layers] == ["int8"] * 5 + ["float32"]
    table = str(layers)
    assert "layers: 6, quantized: 6" in table and "matmul_0" in table


def test_ranges_are_needed_for_chain_inputs_and_int8_outputs():
    plan = _plan(small_cnn())
    # Pools reuse their input's range; the matmul writes float32, so no range for its output.
    assert plan.range_names == [
        "conv2d_0_input",
        "conv2d_0_output",
        "conv2d_1_output",
        "conv2d_2_output",
        "matmul_0_input",
    ]
    observed = plan.observed
    assert observed["conv2d_0_input"].op_name == "input"
    assert observed["conv2d_0_output"].op_name == "onednn.conv2d_bias_relu"
    assert observed["matmul_0_input"].op_name == "relax.reshape"
    assert observed["conv2d_0_output"].nonnegative and not observed["conv2d_0_input"].nonnegative
    # The residual block's int8 residual operand is the max pool's output: conv2d_0's range.
    pool = next(v for v, s in plan.sites.items() if s.layer.name == "max_pool2d_0")
    assert plan.range_of[pool] == "conv2d_0_output"


def test_exclude_layers_keeps_them_float32_and_reroutes_ranges():
    plan = _plan(small_cnn(), exclude_layers=["conv2d_1"])
    layers = _layers(plan)
    assert not layers["conv2d_1"].quantized
    assert layers["conv2d_1"].reason == "excluded by exclude_layers"
    assert layers["conv2d_2"].quantized
    # conv2d_2 now reads conv2d_1's float32 output; the pool is read by a float32 conv.
    assert "conv2d_1_output" in plan.range_names
    pool = next(v for v, s in plan.sites.items() if s.layer.name == "max_pool2d_0")
    assert pool in plan.float_read


def test_exclude_layers_match_uses_regex_search():
    layers = _layers(_plan(small_cnn(), exclude_layers_match=[r"conv2d_[12]$"]))
    assert [n for n, l in layers.items() if not l.quantized] == [
        "conv2d_1",
        "conv2d_2",
        "global_avg_pool2d_0",
    ]
    assert "exclude_layers_match" in layers["conv2d_2"].reason
    assert layers["global_avg_pool2d_0"].reason == "its input is not quantized"


def test_exclude_operators_pool_and_matmul():
    plan = _plan(small_cnn(), exclude_operators=["pool", "matmul"])
    layers = _layers(plan)
    assert {n for n, l in layers.items() if not l.quantized} == {
        "max_pool2d_0",
        "global_avg_pool2d_0",
        "matmul_0",
    }
    # conv2d_0 now feeds a float32 pool: it writes float32 (and the next conv quantizes).
    assert layers["conv2d_0"].output_dtype == "float32"
    assert layers["conv2d_2"].output_dtype == "float32"


def test_pool_after_float32_layer_is_not_quantized():
    layers = _layers(_plan(small_cnn(), exclude_layers=["conv2d_0"]))
    assert layers["max_pool2d_0"].reason == "its input is not quantized"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"exclude_operators": ["softmax"]}, ValueError, "unknown exclude_operators"),
        ({"exclude_layers": ["conv2d_9"]}, ValueError, "conv2d_9"),
        ({"exclude_layers_match": ["conv2d_("]}, re.error, "missing"),
        ({"exclude_layers": [3]}, TypeError, "list of str"),
    ],
)
def test_bad_exclusions_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        _plan(residual_block(), **kwargs)


def test_layers_oneDNN_cannot_run_say_why():
    (conv,) = quantizable_layers(nhwc_conv().mod)
    assert not conv.quantized and conv.chain is None
    assert conv.reason == "runtime takes NCHW data with OIHW weights"
    matmul, _ = matmul_module(const_b=False)
    (layer,) = quantizable_layers(matmul)
    assert layer.chain == "onednn.matmul_bias_relu" and not layer.quantized
    assert layer.reason == "both operands are activations (no constant weight)"
    assert "no constant weight" in str(quantizable_layers(matmul))


def test_plain_conv_chain_module_is_quantizable():
    mod, _ = conv2d_module(bias=True, add=True, activation="relu")
    (layer,) = quantizable_layers(mod)
    assert layer.quantized and layer.chain == "onednn.conv2d_bias_add_relu"
