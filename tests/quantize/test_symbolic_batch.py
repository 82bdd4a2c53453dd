"""int8 quantization of modules with a symbolic batch, and calibration at any batch size.

A module whose input batch is symbolic quantizes to an int8 module with the same symbolic
batch; it compiles once and runs at any batch, checked against the float32 model and
against TVM's own build of the same QDQ module. Calibration samples may come in any batch
size, also for a model built for a static batch (they are regrouped into its batch).
"""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_onednn.byoc.partition import partition_for_onednn, prepare_for_onednn
from tvm_onednn.byoc.summary import summarize_partitioned
from tvm_onednn.calib import CalibrationError, NaiveCollector
from tvm_onednn.quantize import calibrate, plan_quantization, quantize
from tvm_onednn.quantize.calibrate import regroup
from tvm_onednn.testing import Runner, build

from ..byoc.builders import symbolic_convnet, symbolic_matmul_chain
from .helpers import regions

SHAPE = (3, 16, 16)

#: int8 vs float32 on these random-weight models: the largest output error, relative to
#: the largest float32 output (per-tensor u8/s8 activations, per-channel s8 weights).
INT8_VS_FP32 = 0.05


def assert_like_fake_quant(actual, expected):
    """oneDNN int8 vs TVM's build of the same QDQ module: equal but for rounding flips.

    A value within float rounding of a .5 boundary may round to the other int8 step in
    one of them; behind a global pool and a dense layer one flip moves a whole row of
    outputs by up to a few output steps (range / 127), and up to a quarter of the rows
    may hold one (seen: at most 2.6 steps, mean 0.07 step). A wrong scale or a saturating
    kernel moves most outputs by many steps.
    """
    scale = np.abs(expected).max()
    diff = np.abs(actual - expected)
    assert diff.max() <= 0.03 * scale, f"max difference {diff.max()} > 3% of {scale}"
    assert diff.mean() <= 0.002 * scale, f"mean difference {diff.mean()} > 0.2% of {scale}"


def _samples(sizes, seed=1, shape=SHAPE):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, *shape)).astype("float32") for b in sizes]


def _relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _naive(mod, data):
    plan = plan_quantization(prepare_for_onednn(mod))
    return calibrate(plan, data, NaiveCollector(include_layers=plan.range_names))


def _batch_dim(mod):
    return mod["main"].params[0].ty.shape.values[0]


@pytest.fixture(scope="module")
def convnet():
    mod = symbolic_convnet()
    qmod = quantize(mod, _samples([1, 2, 5, 16]), calib_mode="naive")
    return mod, qmod


def test_int8_module_keeps_the_symbolic_batch(convnet):
    _, qmod = convnet
    assert isinstance(_batch_dim(qmod), tvm.tirx.Var)
    summary = summarize_partitioned(partition_for_onednn(qmod))
    assert summary.composites["onednn.qconv2d_bias_relu"] == 1
    assert summary.composites["onednn.qconv2d_add_relu"] == 1
    assert summary.composites["onednn.qmatmul_bias"] == 1
    for region in regions(qmod):
        assert region.doc["version"] == 2
        assert all(node["shape"][0] == "n" for node in region.nodes)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_int8_runs_at_any_batch(convnet, batch):
    mod, qmod = convnet
    int8, fake_quant = Runner(build(qmod)), Runner(build(qmod, "default"))
    fp32 = Runner(build(mod, "default"))
    (x,) = _samples([batch], seed=7)
    out = int8(x)
    assert out.shape == (batch, 10)
    assert_like_fake_quant(out, fake_quant(x))
    assert _relative_error(out, fp32(x)) < INT8_VS_FP32


def test_int8_matmul_chain_with_symbolic_batch_and_length():
    mod = symbolic_matmul_chain("relu")
    rng = np.random.default_rng(3)
    sizes = ((1, 7), (2, 32), (8, 64))
    calib = [rng.standard_normal((b, s, 64)).astype("float32") for b, s in sizes]
    qmod = quantize(mod, calib, calib_mode="naive")
    (region,) = regions(qmod)
    assert "onednn.qmatmul_bias_relu" in region.ops()
    assert region.doc["inputs"][0]["shape"] == ["n", "s", 64]
    int8, fake_quant = Runner(build(qmod)), Runner(build(qmod, "default"))
    fp32 = Runner(build(mod, "default"))
    for b, s in ((1, 7), (3, 32), (16, 128)):
        a = rng.standard_normal((b, s, 64)).astype("float32")
        out = int8(a)
        assert_like_fake_quant(out, fake_quant(a))
        assert _relative_error(out, fp32(a)) < INT8_VS_FP32


def test_ranges_do_not_depend_on_batching_with_a_symbolic_batch():
    mod = symbolic_convnet()
    (x,) = _samples([8])
    one_by_one = _naive(mod, [x[i : i + 1] for i in range(8)])
    together = _naive(mod, [x])
    assert one_by_one.keys() == together.keys()
    for name, (lo, hi) in together.items():
        assert one_by_one[name] == pytest.approx((lo, hi), rel=1e-5, abs=1e-6), name


@pytest.mark.parametrize("model_batch", [8, 16, 3])
def test_a_static_batch_model_calibrates_on_samples_of_any_batch(model_batch):
    mod = symbolic_convnet(batch=model_batch)
    (x,) = _samples([8])
    one_by_one = _naive(mod, [x[i : i + 1] for i in range(8)])
    together = _naive(mod, [x])
    in_fours = _naive(mod, [x[:4], x[4:]])
    for name, (lo, hi) in together.items():
        assert one_by_one[name] == pytest.approx((lo, hi), rel=1e-5, abs=1e-6), name
        assert in_fours[name] == pytest.approx((lo, hi), rel=1e-5, abs=1e-6), name
    # The model's input range is the samples' own (a filled-up batch repeats samples only).
    first = next(n for n in together if n.endswith("_input"))
    assert together[first] == pytest.approx((x.min(), x.max()))


def test_static_batch_model_quantizes_from_batch_1_samples():
    mod = symbolic_convnet(batch=16)
    qmod = quantize(mod, [x[:1] for x in _samples([1] * 5)], calib_mode="naive")
    assert int(_batch_dim(qmod)) == 16
    (x,) = _samples([16], seed=9)
    assert_like_fake_quant(Runner(build(qmod))(x), Runner(build(qmod, "default"))(x))


def test_regroup_fills_the_last_batch_with_the_first_samples():
    samples = [[np.arange(3 * i, 3 * i + 3)[:, None]] for i in range(3)]  # 0..8, in threes
    batches = [b[0][:, 0].tolist() for b in regroup(iter(samples), 4)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 0, 1, 2]]
    small = [[np.arange(2)[:, None]]]
    assert [b[0][:, 0].tolist() for b in regroup(iter(small), 5)] == [[0, 1, 0, 1, 0]]


@pytest.mark.parametrize(
    "batch, match",
    [
        (np.zeros((2, 4, 16, 16), "float32"), r"has shape \[2, 4, 16, 16\], .* \[n, 3, 16, 16\]"),
        (np.zeros((2, 3, 16), "float32"), r"has shape \[2, 3, 16\], .* \[n, 3, 16, 16\]"),
        (np.zeros((0, 3, 16, 16), "float32"), r"has shape \[0, 3, 16, 16\], .* \[n, 3, 16, 16\]"),
        ({"data": np.zeros((1, 3, 16, 16), "float32")}, r"unknown \['data'\], missing \['x'\]"),
    ],
)
def test_wrong_inputs_of_a_symbolic_batch_model_are_clear_errors(batch, match):
    with pytest.raises(CalibrationError, match=match):
        _naive(symbolic_convnet(), [batch])


def test_wrong_channels_of_a_static_batch_model_are_a_clear_error():
    with pytest.raises(CalibrationError, match=r"\[16, 3, 16, 16\] \(any batch size\)"):
        _naive(symbolic_convnet(batch=16), [np.zeros((1, 4, 16, 16), "float32")])


def _two_input_module(batch):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([batch, 8], "float32"))
    r = relax.Var("r", relax.TensorType([batch, 4], "float32"))
    w = relax.const(np.random.default_rng(0).standard_normal((8, 4)).astype("float32"))
    with bb.function("main", [x, r]):
        with bb.dataflow():
            gv = bb.emit_output(bb.emit(relax.op.add(relax.op.matmul(x, w), r)))
        bb.emit_func_output(gv)
    return bb.finalize()


@pytest.mark.parametrize(
    "batch, match",
    [
        (tvm.tirx.Var("n", "int64"), r"input 'r' has shape \[3, 4\], the model takes \[n, 4\]"),
        (4, r"the inputs have different batch sizes \{'x': 2, 'r': 3\}"),
    ],
)
def test_inputs_must_agree_on_the_batch(batch, match):
    data = {"x": np.zeros((2, 8), "float32"), "r": np.zeros((3, 4), "float32")}
    with pytest.raises(CalibrationError, match=match):
        _naive(_two_input_module(batch), [data])


def test_a_symbolic_spatial_dim_keeps_the_layer_float32_and_says_why():
    n, h = tvm.tirx.Var("n", "int64"), tvm.tirx.Var("h", "int64")
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([n, 3, h, h], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = relax.op.nn.conv2d(x, relax.const(weight), padding=1)
            gv = bb.emit_output(bb.emit(relax.op.nn.relu(conv)))
        bb.emit_func_output(gv)
    samples = _samples([2], shape=(3, 8, 8))
    qmod, report = quantize(bb.finalize(), samples, calib_mode="naive", return_report=True)
    (layer,) = report.layers
    assert not layer.quantized
    assert layer.reason == (
        "conv2d with a symbolic channel/spatial dim (only the batch may be symbolic)"
    )
    assert "relax.quantize" not in qmod.script()
