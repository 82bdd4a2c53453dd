"""Range -> scale/zero-point functions, weight scales, dtype choice and range validation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tvm_onednn.calib import (
    CalibrationError,
    choose_activation_dtype,
    range_to_scale,
    validate_ranges,
    weight_scales,
)

# -- range_to_scale ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "dtype", "symmetric", "scale", "zero_point"),
    [
        (-1.27, 1.27, "int8", True, 0.01, 0),
        (-0.5, 1.27, "int8", True, 0.01, 0),  # max(|min|, |max|)
        (0.0, 2.55, "uint8", True, 0.01, 0),
        (0.0, 1.27, "int8", True, 0.01, 0),
        (-1.0, 3.0, "uint8", False, 4.0 / 255, 64),  # round(0 + 1 / (4/255)) = round(63.75)
        (-1.0, 3.0, "int8", False, 4.0 / 255, -64),  # round(-128 + 63.75)
        (1.0, 3.0, "uint8", False, 3.0 / 255, 0),  # widened to include 0
        (-3.0, -1.0, "uint8", False, 3.0 / 255, 255),
    ],
)
def test_range_to_scale_hand_values(
    lo: float, hi: float, dtype: str, symmetric: bool, scale: float, zero_point: int
) -> None:
    got_scale, got_zp = range_to_scale(lo, hi, dtype, symmetric=symmetric)
    assert got_scale == pytest.approx(scale, rel=1e-12)
    assert got_zp == zero_point
    assert type(got_scale) is float and type(got_zp) is int


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bounds", [(0.0, 0.0), (0.0, 1e-45)])
def test_range_to_scale_degenerate_range(dtype: str, symmetric: bool, bounds: tuple) -> None:
    assert range_to_scale(*bounds, dtype, symmetric=symmetric) == (1.0, 0)


@pytest.mark.parametrize(("lo", "hi", "dtype", "symmetric"),
                         [(-2.0, 6.0, "int8", True), (0.0, 6.0, "uint8", True),
                          (-2.0, 6.0, "uint8", False), (-2.0, 6.0, "int8", False)])
def test_range_to_scale_round_trip_error_is_half_a_step(
    lo: float, hi: float, dtype: str, symmetric: bool
) -> None:
    scale, zp = range_to_scale(lo, hi, dtype, symmetric=symmetric)
    qmin, qmax = (-128, 127) if dtype == "int8" else (0, 255)
    x = np.linspace(lo, hi, 10_001)
    q = np.clip(np.round(x / scale) + zp, qmin, qmax)
    assert np.max(np.abs((q - zp) * scale - x)) <= scale / 2 + 1e-12


@pytest.mark.parametrize(("lo", "hi"), [(np.nan, 1.0), (-1.0, np.inf), (2.0, 1.0)])
def test_range_to_scale_rejects_bad_ranges(lo: float, hi: float) -> None:
    with pytest.raises(CalibrationError):
        range_to_scale(lo, hi, "int8")


def test_symmetric_uint8_rejects_negative_values() -> None:
    with pytest.raises(CalibrationError, match="non-negative"):
        range_to_scale(-0.1, 2.0, "uint8", symmetric=True)


def test_range_to_scale_rejects_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="int8"):
        range_to_scale(-1.0, 1.0, "int4")


# -- weight_scales -----------------------------------------------------------------------------


def test_weight_scales_per_output_channel() -> None:
    w = np.zeros((3, 2, 2), dtype=np.float32)
    w[0] = [[0.5, -1.27], [0.1, 0.0]]
    w[1] = [[2.54, 0.0], [-1.0, 0.0]]  # w[2] stays all zero
    scales = weight_scales(w, axis=0)
    assert scales.dtype == np.float32 and scales.shape == (3,)
    np.testing.assert_allclose(scales, [0.01, 0.02, 1.0], rtol=1e-6)


@pytest.mark.parametrize("axis", [1, -1])
def test_weight_scales_other_axis(axis: int) -> None:
    w = np.array([[1.27, -0.127], [-2.54, 0.0]])  # e.g. a (in, out) dense weight
    np.testing.assert_allclose(weight_scales(w, axis=axis), [0.02, 0.001], rtol=1e-6)


def test_weight_scales_accepts_array_likes() -> None:
    class Tensor:
        def numpy(self) -> np.ndarray:
            return np.array([[1.27], [-2.54]])

    np.testing.assert_allclose(weight_scales(Tensor()), [0.01, 0.02], rtol=1e-6)


def test_weight_scales_rejects_non_finite_and_bad_axis() -> None:
    with pytest.raises(CalibrationError, match=r"\[1\]"):
        weight_scales(np.array([[1.0, 2.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError):
        weight_scales(np.ones((2, 2)), axis=2)
    with pytest.raises(ValueError):
        weight_scales(np.float32(1.0))


# -- choose_activation_dtype -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "mode", "expected"),
    [(0.0, 6.0, "auto", "uint8"), (-1e-6, 6.0, "auto", "int8"), (0.5, 1.0, "int8", "int8"),
     (-1.0, 1.0, "int8", "int8"), (0.0, 1.0, "uint8", "uint8")],
)
def test_choose_activation_dtype(lo: float, hi: float, mode: str, expected: str) -> None:
    assert choose_activation_dtype(lo, hi, mode) == expected


def test_forced_uint8_on_negative_range_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tvm_onednn.calib.scales"):
        assert choose_activation_dtype(-1.0, 1.0, "uint8") == "uint8"
    assert any("saturate" in r.getMessage() for r in caplog.records)


def test_choose_activation_dtype_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError):
        choose_activation_dtype(0.0, 1.0, "fp8")


# -- validate_ranges ---------------------------------------------------------------------------


def test_validate_ranges_normalises() -> None:
    ranges = {
        "a": (np.float32(-1.5), np.float32(2.0)),
        "b": [0, np.int64(3)],
        "c": np.array([0.0, 1.0]),
    }
    clean = validate_ranges(ranges, expected_layers=["a", "b"])
    assert clean == {"a": (-1.5, 2.0), "b": (0.0, 3.0), "c": (0.0, 1.0)}  # extras kept
    assert all(type(v) is float for pair in clean.values() for v in pair)


def test_calibration_error_is_a_value_error() -> None:
    assert issubclass(CalibrationError, ValueError)


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ({"a": (np.nan, 1.0)}, "'a': non-finite"),
        ({"a": (-np.inf, 1.0)}, "'a': non-finite"),
        ({"a": (2.0, 1.0)}, "'a': min 2.0 > max 1.0"),
        ({"a": (0.0, 1.0, 2.0)}, "'a': expected a \\(min, max\\) pair, got 3 values"),
        ({"a": 1.0}, "'a': expected a \\(min, max\\) pair, got float"),
        ({"a": "0,1"}, "'a': expected a \\(min, max\\) pair, got str"),
        ({"a": ("0", 1.0)}, "'a': bounds must be real numbers"),
        ({"a": (False, True)}, "'a': bounds must be real numbers"),
        ({3: (0.0, 1.0)}, "layer name 3 is a int"),
        ([("a", (0.0, 1.0))], "must be a mapping"),
    ],
)
def test_validate_ranges_rejects(ranges: object, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        validate_ranges(ranges)


def test_validate_ranges_names_missing_layers() -> None:
    with pytest.raises(CalibrationError, match=r"2 layer\(s\): 'conv2', 'fc'"):
        validate_ranges({"conv1": (0.0, 1.0)}, expected_layers=["fc", "conv1", "conv2"])


def test_validate_ranges_reports_every_problem_at_once() -> None:
    with pytest.raises(CalibrationError) as info:
        validate_ranges({"a": (1.0, 0.0), "b": (np.nan, 0.0)}, expected_layers=["a", "b", "c"])
    text = str(info.value)
    assert "'a': min" in text and "'b': non-finite" in text and "'c'" in text


def test_validate_ranges_truncates_long_missing_lists() -> None:
    with pytest.raises(CalibrationError, match="and 5 more"):
        validate_ranges({}, expected_layers=[f"l{i:02d}" for i in range(25)])
