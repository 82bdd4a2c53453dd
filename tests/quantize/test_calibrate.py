"""Calibration: batch forms, collectors driving it, hand-computed ranges, clear errors."""

import io
import itertools
import logging
import sys

import numpy as np
import pytest
import torch

from tvm_onednn.byoc.partition import prepare_for_onednn
from tvm_onednn.calib import CalibrationCollector, CalibrationError, NaiveCollector, cpu
from tvm_onednn.quantize import calibrate, plan_quantization, quantize

from .helpers import FixedRanges, const, main_calls
from .models import Model, mlp, residual_block, residual_block_reference


@pytest.fixture(scope="module")
def block():
    return residual_block()


@pytest.fixture(scope="module")
def plan(block):
    return plan_quantization(prepare_for_onednn(block.mod))


def _naive(plan, data, **kwargs):
    return calibrate(plan, data, NaiveCollector(include_layers=plan.range_names), **kwargs)


def test_naive_ranges_match_hand_computation(block, plan):
    batches = block.batches(3)
    ranges = _naive(plan, batches)
    refs = [residual_block_reference(block, x) for x in batches]
    x = np.stack([r["x"] for r in refs])
    y = np.stack([r["y"] for r in refs])
    assert set(ranges) == {"conv2d_0_input", "conv2d_0_output"}
    np.testing.assert_allclose(ranges["conv2d_0_input"], (x.min(), x.max()), rtol=1e-6)
    np.testing.assert_allclose(ranges["conv2d_0_output"], (0.0, y.max()), rtol=1e-4)


class _Loader:
    """DataLoader-like: iterable (re-iterable), has len, yields (torch tensor, label)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays)

    def __iter__(self):
        for i, a in enumerate(self.arrays):
            yield torch.from_numpy(a), torch.tensor([i])


def test_batch_forms_give_the_same_ranges(block, plan):
    batches = block.batches(2)
    expected = _naive(plan, batches)
    forms = [
        [{"x": b} for b in batches],  # dicts
        (b for b in batches),  # a generator of arrays
        _Loader(batches),  # (data, label) tuples of torch tensors
    ]
    for data in forms:
        assert _naive(plan, data) == expected


def test_num_calib_batches_caps_an_endless_source(block, plan):
    collector = FixedRanges({"conv2d_0_input": (-1.0, 1.0), "conv2d_0_output": (0.0, 1.0)})
    endless = itertools.cycle(block.batches(2))
    calibrate(plan, endless, collector, num_calib_batches=3)
    assert collector.calls == {"conv2d_0_input": 3, "conv2d_0_output": 3}
    # op_name tells what produced each tensor.
    assert collector.seen == {
        "conv2d_0_input": "input",
        "conv2d_0_output": "onednn.conv2d_bias_relu",
    }


@pytest.mark.parametrize(
    "data, match",
    [
        ([], "calib_data is empty"),
        ((b for b in []), "calib_data is empty"),
        ([{"data": np.zeros((1, 8, 8, 8), "float32")}], r"unknown \['data'\], missing \['x'\]"),
        (
            [np.zeros((1, 8, 4, 4), "float32")],
            r"input 'x' has shape \[1, 8, 4, 4\], .* \[1, 8, 8, 8\]",
        ),
        (
            [np.zeros((1, 8, 8, 8), "float64")],
            r"input 'x' has dtype float64, the model takes float32",
        ),
        ([()], r"0 array\(s\) for a model with 1 inputs \['x'\]"),
        (3, "iterable of batches"),
    ],
)
def test_bad_calibration_data_is_a_clear_error(plan, data, match):
    with pytest.raises(CalibrationError, match=match):
        _naive(plan, data)


@pytest.mark.parametrize(
    "ranges, match",
    [
        ({"conv2d_0_input": (float("nan"), 1.0), "conv2d_0_output": (0.0, 1.0)}, "non-finite"),
        ({"conv2d_0_input": (1.0, -1.0), "conv2d_0_output": (0.0, 1.0)}, "min 1.0 > max -1.0"),
        ([(0, 1)], "must be a mapping"),
    ],
)
def test_bad_collector_ranges_are_a_clear_error(block, ranges, match):
    with pytest.raises(CalibrationError, match=f"(?s)FixedRanges.post_collect.*{match}"):
        quantize(block.mod, block.batches(1), calib_mode="custom", collector=FixedRanges(ranges))


class ExampleNaiveCollector(CalibrationCollector):
    """MXNet 2.0's documented example collector; only the import line changed."""

    def __init__(self, logger=None):
        super(ExampleNaiveCollector, self).__init__()  # noqa: UP008 (verbatim MXNet)
        self.logger = logger

    def collect(self, name, op_name, arr):
        if name not in self.include_layers:
            return
        arr = arr.copyto(cpu()).asnumpy()
        min_range = np.min(arr)
        max_range = np.max(arr)
        if name in self.min_max_dict:
            cur_min_max = self.min_max_dict[name]
            self.min_max_dict[name] = (
                min(cur_min_max[0], min_range),
                max(cur_min_max[1], max_range),
            )
        else:
            self.min_max_dict[name] = (min_range, max_range)
        if self.logger:
            self.logger.debug(
                "Collecting layer %s min_range=%f, max_range=%f"  # noqa: UP031
                % (name, min_range, max_range)
            )

    def post_collect(self):
        return self.min_max_dict


def test_mxnet_style_custom_collector_drives_calibration(block, caplog):
    collector = ExampleNaiveCollector(logger=logging.getLogger("example"))
    assert collector.include_layers is None
    batches = block.batches(2)
    with caplog.at_level(logging.DEBUG, logger="example"):
        qmod = quantize(block.mod, batches, calib_mode="custom", collector=collector)
    # The quantizer filled include_layers in, and the collector's ranges set the scales.
    assert collector.include_layers == {"conv2d_0_input", "conv2d_0_output"}
    assert "Collecting layer conv2d_0_output" in caplog.text
    lo, hi = collector.min_max_dict["conv2d_0_input"]
    q_x, q_y = main_calls(qmod, "quantize")
    assert float(const(q_x.args[1])) == pytest.approx(max(-lo, hi) / 127, rel=1e-6)
    assert float(const(q_y.args[1])) == pytest.approx(
        collector.min_max_dict["conv2d_0_output"][1] / 255, rel=1e-6
    )


def test_a_missing_range_keeps_its_readers_float32(block):
    """A collector returning no range for a tensor is no error: what needs it stays fp32."""
    collector = FixedRanges({"conv2d_0_input": (-1.0, 1.0)})
    qmod, report = quantize(
        block.mod, block.batches(1), calib_mode="custom", collector=collector, return_report=True
    )
    assert report.quantized() == ["conv2d_0"]
    conv1 = report.layer("conv2d_1")
    assert conv1.reason_kind == "calibration"
    assert conv1.reason == (
        "no calibration range for its input "
        "(conv2d_0_output: FixedRanges.post_collect() returned no range for it)"
    )
    assert report.layer("conv2d_0").output_dtype == "float32"  # its reader is float32 now
    assert report.unusable_ranges == {
        "conv2d_0_output": "FixedRanges.post_collect() returned no range for it"
    }
    assert len(main_calls(qmod, "quantize")) == 1


def test_user_include_layers_is_respected(block):
    collector = NaiveCollector(include_layers=["conv2d_0_input"])
    _, report = quantize(
        block.mod, block.batches(1), calib_mode="custom", collector=collector, return_report=True
    )
    assert collector.include_layers == {"conv2d_0_input"}
    assert report.quantized() == ["conv2d_0"]
    assert "conv2d_0_output: NaiveCollector.post_collect() returned no range" in (
        report.layer("conv2d_1").reason
    )


def test_calibrate_itself_still_needs_every_range(block, plan):
    """``calibrate`` (the building block) promises a range per name, or says which lack one."""
    collector = FixedRanges({"conv2d_0_input": (-1.0, 1.0)})
    with pytest.raises(CalibrationError, match="no usable range for 1 tensor.*conv2d_0_output"):
        calibrate(plan, block.batches(1), collector)


@pytest.mark.parametrize("mode", ["naive", "entropy", "percentile"])
def test_builtin_collectors_give_ranges_inside_the_observed_ones(mode):
    model: Model = mlp()
    batches = model.batches(4)
    plan = plan_quantization(prepare_for_onednn(model.mod))
    naive = _naive(plan, batches)
    qmod = quantize(model.mod, batches, calib_mode=mode)
    quants = main_calls(qmod, "quantize")
    assert len(quants) == len(plan.range_names) == 3  # x, matmul_0 (relu) and matmul_1 (gelu)
    for q, name in zip(quants, plan.range_names):
        lo, hi = naive[name]
        unsigned = lo >= 0
        assert str(q.attrs.out_dtype) == ("uint8" if unsigned else "int8")
        limit = max(-lo, hi) / (255 if unsigned else 127)
        assert 0 < float(const(q.args[1])) <= limit * (1 + 1e-6)


def test_progress_bar_on_a_terminal(block, plan, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain-text bar, even if tqdm exists
    _naive(plan, block.batches(2))
    assert "calibrating: 2/2 batches" in terminal.getvalue()


def test_no_progress_bar_when_not_a_terminal(block, plan, monkeypatch):
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    _naive(plan, block.batches(2))
    assert "calibrating" not in pipe.getvalue()
