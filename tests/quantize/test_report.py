"""``quantize(..., return_report=True)``: the QuantizeReport's content, text and data."""

import json

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_onednn
from tvm_onednn.quantize import QuantizeReport, quantize

from .helpers import FixedRanges
from .models import mlp, nhwc_conv, small_cnn


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


@pytest.fixture(scope="module")
def cnn_report(cnn):
    batches = cnn.batches(2)
    qmod, report = quantize(cnn.mod, batches, exclude_layers=["conv2d_1"], return_report=True)
    return qmod, report


def test_default_return_is_the_module_alone(cnn):
    qmod = quantize(cnn.mod, cnn.batches(1))
    assert isinstance(qmod, tvm.IRModule)


def test_layers_dtypes_weights_and_composites(cnn_report):
    _, report = cnn_report
    assert isinstance(report, QuantizeReport)
    assert (report.num_layers, report.num_quantized) == (6, 5)
    assert report.quantized() == [
        "conv2d_0", "max_pool2d_0", "conv2d_2", "global_avg_pool2d_0", "matmul_0"
    ]  # fmt: skip
    conv0 = report.layer("conv2d_0")
    # Gaussian input: signed; after ReLU: unsigned, read only by int8 layers.
    assert (conv0.input_dtype, conv0.output_dtype) == ("int8", "uint8")
    assert conv0.int8_chain == "onednn.qconv2d_bias_relu"
    assert conv0.weights.startswith("s8 per-channel")
    pool = report.layer("max_pool2d_0")
    assert (pool.input_dtype, pool.output_dtype, pool.weights) == ("uint8", "uint8", None)
    assert pool.int8_chain == "onednn.qmax_pool2d"
    # The last layer writes float32; conv2d_2 reads the excluded layer's output as u8.
    assert report.layer("matmul_0").output_dtype == "float32"
    assert report.layer("conv2d_2").input_dtype == "uint8"
    kept = report.layer("conv2d_1")
    assert not kept.quantized and kept.reason_kind == "excluded"
    assert report.kept_float32() == {"conv2d_1": "excluded by exclude_layers"}


def test_calibration_facts(cnn_report):
    _, report = cnn_report
    assert (report.calib_mode, report.collector, report.batches) == ("entropy", "EntropyCollector", 2)  # the default mode
    assert report.backend == "onednn" and report.fallbacks == []
    assert not report.calibration_fell_back


def test_printout_and_summary(cnn_report):
    _, report = cnn_report
    text = str(report)
    assert text.startswith("int8 quantization: 5 of 6 layers int8 (conv2d 2/3, max_pool2d 1/1")
    assert "calibration: entropy (EntropyCollector), 2 batch(es), ran on float32 oneDNN" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("conv2d_0 "))
    assert row.split()[:4] == ["conv2d_0", "yes", "s8", "u8"] and "onednn.qconv2d_bias_relu" in row
    row = next(line for line in text.splitlines() if line.strip().startswith("conv2d_1 "))
    assert row.split()[:3] == ["conv2d_1", "no", "-"] and "[excluded by exclude_layers]" in row
    summary = report.summary()
    assert summary.splitlines()[0] == text.splitlines()[0]
    assert "kept float32 (1):\n  excluded by the user (1):\n    conv2d_1: excluded by" in summary
    assert "onednn.qconv2d_bias_relu" not in summary  # no per-layer table


def test_as_dict_is_json_data(cnn_report):
    _, report = cnn_report
    data = json.loads(json.dumps(report.as_dict()))
    assert data["num_layers"] == 6 and data["num_quantized"] == 5
    assert data["calibration"] == {
        "mode": "entropy",
        "collector": "EntropyCollector",
        "batches": 2,
        "backend": "onednn",
        "fallbacks": [],
        "unusable_ranges": {},
    }
    layer = data["layers"][0]
    assert layer["name"] == "conv2d_0" and layer["input_dtype"] == "int8"
    assert data["quantize_granularity"] == "channel-wise"


def test_weight_encodings_follow_the_isa(avx2_cpu):
    model = small_cnn()
    _, report = quantize(model.mod, model.batches(1), return_report=True)
    assert report.int8_dot_product is False
    # s8-data conv: even 7-bit weights; u8-data conv and matmul: pair-bounded 8-bit.
    assert report.layer("conv2d_0").weights == "s8 per-channel, 7-bit multiples of 2"
    assert report.layer("conv2d_1").weights == "s8 per-channel, 8-bit, pair sums <= 128"
    assert report.layer("matmul_0").weights == "s8 per-channel, 8-bit, pair sums <= 128"
    assert "no int8 dot products (AVX2)" in str(report)


def test_depthwise_weights_have_no_pairs(avx2_cpu):
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 8, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const((rng.standard_normal((8, 1, 3, 3)) * 0.3).astype("float32"))
            y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(x, w, padding=1, groups=8))))
            gv = bb.emit_output(y)
        bb.emit_func_output(gv)
    batch = [np.abs(rng.standard_normal((1, 8, 8, 8))).astype("float32")]  # u8 data
    _, report = quantize(bb.finalize(), batch, return_report=True)
    assert report.layer("conv2d_0").input_dtype == "uint8"
    assert report.layer("conv2d_0").weights == "s8 per-channel, 8-bit"  # not pair-bounded


def test_tensor_wise_and_forced_dtype(vnni_cpu):
    model = mlp()
    _, report = quantize(
        model.mod,
        model.batches(1),
        quantized_dtype="int8",
        quantize_granularity="tensor-wise",
        return_report=True,
    )
    assert {l.input_dtype for l in report.layers} == {"int8"}
    assert report.layer("matmul_0").weights == "s8 per-tensor, 8-bit"
    assert "activations: s8 (forced); weights: s8 tensor-wise" in str(report)


def test_calib_mode_none_says_ranges_are_computed_per_call():
    model = mlp()
    _, report = quantize(model.mod, calib_mode="none", return_report=True)
    assert report.num_quantized == 3 and report.collector is None and report.batches == 0
    assert "calibration: none (dynamic: matmul input ranges computed per call" in str(report)


def test_custom_collector_named_in_the_report():
    model = mlp()
    ranges = {"matmul_0_input": (-3.0, 3.0), "matmul_0_output": (0.0, 4.0),
              "matmul_1_output": (-1.0, 5.0)}  # fmt: skip
    collector = FixedRanges(ranges)
    _, report = quantize(
        model.mod, model.batches(1), calib_mode="custom", collector=collector, return_report=True
    )
    assert report.collector == "FixedRanges" and report.calib_mode == "custom"
    assert report.layer("matmul_0").output_dtype == "uint8"


def test_nothing_to_quantize():
    model = nhwc_conv()
    qmod, report = quantize(model.mod, model.batches(1), return_report=True)
    assert report.num_quantized == 0 and report.num_layers == 1
    layer = report.layer("conv2d_0")
    assert layer.reason_kind == "unsupported"
    assert layer.reason == "runtime takes NCHW data with OIHW weights"
    assert "not supported by the int8 table (1):" in report.summary()
    assert "calibration: entropy, not run (no layer needs a range)" in str(report)


def test_unknown_layer_name_is_a_key_error(cnn_report):
    with pytest.raises(KeyError, match="no layer 'conv2d_9'"):
        cnn_report[1].layer("conv2d_9")


def test_package_exports():
    from tvm_onednn.quantize import LayerReport, QuantizeReport  # noqa: F401

    assert tvm_onednn.quantize is quantize
