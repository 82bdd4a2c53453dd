"""``calib_mode="auto"`` (the default): dynamic int8 for matmul-only models, entropy otherwise.

Reference for the numerics: TVM's own LLVM build of the float32 model; dynamic int8 of the
MLP stays within 3 % of the output's range (one u8/s8 step per input element, per call).
"""

from __future__ import annotations

import numpy as np
import pytest

from tvm_onednn.calib import CalibrationError
from tvm_onednn.quantize import (
    CalibrationDataRequired,
    quantize,
    resolve_auto_mode,
    top1_agreement,
)
from tvm_onednn.testing import Runner, build

from .models import mlp, residual_block


def test_matmul_only_model_is_quantized_dynamically_without_data():
    model = mlp()
    qmod, report = quantize(model.mod, return_report=True)
    assert report.calib_mode == "none"
    assert report.num_quantized == 3, report
    x = model.batches(1, seed=5)[0]
    expected = Runner(build(model.mod, pipeline="default"))(x)
    actual = Runner(build(qmod))(x)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=0.03 * np.abs(expected).max())


def test_matmul_only_model_ignores_calibration_data_in_auto_mode():
    model = mlp()
    _, report = quantize(model.mod, model.batches(2), return_report=True)
    assert report.calib_mode == "none"


def test_conv_model_uses_entropy():
    model = residual_block()
    _, report = quantize(model.mod, model.batches(2), return_report=True)
    assert report.calib_mode == "entropy"
    assert report.num_quantized == 2


def test_conv_model_without_data_names_the_chosen_mode():
    with pytest.raises(CalibrationError, match="calib_mode='auto' chose 'entropy'") as info:
        quantize(residual_block().mod)
    assert isinstance(info.value, CalibrationDataRequired) and info.value.chosen == "entropy"


def test_accuracy_control_needs_static_ranges_so_auto_picks_entropy():
    model = mlp()
    data = model.batches(2)
    _, report = quantize(
        model.mod, data, validation=(data, top1_agreement), max_drop=1.0, return_report=True
    )
    assert report.calib_mode == "entropy"


@pytest.mark.parametrize(
    ("kinds", "control", "expected"),
    [
        ({"matmul"}, False, "none"),
        ({"matmul", "max_pool2d"}, False, "none"),
        ({"matmul", "conv2d"}, False, "entropy"),
        ({"matmul"}, True, "entropy"),
        (set(), False, "entropy"),
    ],
)
def test_resolution_rule(kinds, control, expected):
    class _Layer:
        def __init__(self, kind):
            self.kind, self.quantized = kind, True

    class _Plan:
        layers = [_Layer(k) for k in sorted(kinds)]

    assert resolve_auto_mode(_Plan(), control) == expected
