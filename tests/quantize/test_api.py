"""``tvm_onednn.quantize``: argument checks, and models with nothing to quantize."""

import numpy as np
import pytest

import tvm_onednn
from tvm_onednn.calib import CalibrationError, NaiveCollector
from tvm_onednn.quantize import quantize
from tvm_onednn.testing import run

from .helpers import main_ops
from .models import nhwc_conv, residual_block


def test_exported_at_package_level():
    assert tvm_onednn.quantize is quantize
    assert "quantize" in tvm_onednn.__all__


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"calib_mode": "kl"}, "unknown calib_mode 'kl'"),
        ({"calib_mode": "custom"}, "calib_mode='custom' needs collector="),
        ({"collector": NaiveCollector()}, "collector is only used with calib_mode='custom'"),
        ({"quantize_granularity": "row-wise"}, "quantize_granularity must be one of"),
        ({"quantized_dtype": "int4"}, "quantized_dtype must be one of"),
        ({"num_calib_batches": 0}, "num_calib_batches must be a positive int"),
        ({"exclude_operators": ["softmax"]}, "unknown exclude_operators"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    model = residual_block()
    with pytest.raises(ValueError, match=match):
        quantize(model.mod, model.batches(1), **kwargs)


def test_calibration_modes_need_data():
    with pytest.raises(CalibrationError, match="needs calib_data"):
        quantize(residual_block().mod)


def test_nothing_to_quantize_stays_float32(caplog):
    model = nhwc_conv()
    qmod = quantize(model.mod, model.batches(1))
    assert "quantize" not in main_ops(qmod) and "dequantize" not in main_ops(qmod)
    assert "no layer can be quantized" in caplog.text
    x = model.batches(1)[0]
    np.testing.assert_allclose(
        run(qmod, [x], "default"),
        run(model.mod, [x], "default"),
        rtol=1e-5,
        atol=1e-5,
    )


class _MidRange(NaiveCollector):
    """min/max shrunk by a quarter: a collector registered under a calib_mode name."""

    def post_collect(self):
        return {n: (lo * 0.75, hi * 0.75) for n, (lo, hi) in super().post_collect().items()}


def test_registered_collectors_are_calib_modes():
    from tvm_onednn.calib import register_collector
    from tvm_onednn.calib import registry
    from tvm_onednn.quantize import CALIB_MODES, calib_modes

    assert "midrange" not in CALIB_MODES
    register_collector("midrange", _MidRange)
    try:
        assert calib_modes() == (
            "naive", "entropy", "percentile", "midrange", "auto", "custom", "none"
        )
        assert "midrange" in CALIB_MODES and CALIB_MODES[3] == "midrange"
        model = residual_block()
        _, report = quantize(model.mod, model.batches(1), calib_mode="midrange", return_report=True)
        assert report.collector == "_MidRange" and report.num_quantized == 2
    finally:
        registry._REGISTRY.pop("midrange", None)  # the registry has no public unregister
    assert "midrange" not in CALIB_MODES
