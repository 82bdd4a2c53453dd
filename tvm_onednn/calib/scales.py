"""Pure functions from calibrated ranges to quantization parameters, and range validation.

Conventions (oneDNN, MXNet): ``real = scale * (q - zero_point)``.

* symmetric int8: ``scale = max(|min|, |max|) / 127``, ``zero_point = 0``;
* symmetric uint8 (non-negative data such as post-ReLU activations): ``scale = max / 255``,
  ``zero_point = 0``;
* asymmetric: the range is widened to contain 0 (so that 0 is exact), then
  ``scale = (max - min) / (qmax - qmin)`` and ``zero_point = round(qmin - min / scale)``.

A degenerate range (all zeros, or too small for a normal float32 scale) maps to
``scale = 1.0``, ``zero_point = 0``: every value quantizes to 0 either way, and a unit scale
keeps the requantization factors of neighbouring layers finite.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

from .collector import Range
from .compat import to_numpy
from .errors import CalibrationError

__all__ = [
    "choose_activation_dtype",
    "range_to_scale",
    "validate_ranges",
    "weight_scales",
]

logger = logging.getLogger(__name__)

QuantDtype = Literal["int8", "uint8"]

#: ``(qmin, qmax)`` of each quantized type.
QUANT_LIMITS: dict[str, tuple[int, int]] = {"int8": (-128, 127), "uint8": (0, 255)}
#: Largest magnitude of a symmetric (zero-point-free) encoding.
_SYMMETRIC_QMAX: dict[str, int] = {"int8": 127, "uint8": 255}
_MIN_SCALE = float(np.finfo(np.float32).tiny)


def _check_bounds(min_val: float, max_val: float) -> tuple[float, float]:
    lo, hi = float(min_val), float(max_val)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CalibrationError(f"range bounds must be finite, got ({lo}, {hi})")
    if lo > hi:
        raise CalibrationError(f"range min {lo} is greater than max {hi}")
    return lo, hi


def range_to_scale(
    min_val: float, max_val: float, dtype: QuantDtype, symmetric: bool = True
) -> tuple[float, int]:
    """Scale and zero point that map ``[min_val, max_val]`` onto ``dtype``.

    Args:
        min_val, max_val: the calibrated range.
        dtype: ``"int8"`` or ``"uint8"``.
        symmetric: zero point fixed at 0 (``uint8`` then needs ``min_val >= 0``).

    Returns:
        ``(scale, zero_point)`` as a Python float and int.

    Raises:
        CalibrationError: non-finite bounds, ``min > max``, or a symmetric uint8 range with
            negative values.
        ValueError: unknown ``dtype``.
    """
    if dtype not in QUANT_LIMITS:
        raise ValueError(f"dtype must be 'int8' or 'uint8', got {dtype!r}")
    lo, hi = _check_bounds(min_val, max_val)
    if symmetric:
        if dtype == "uint8" and lo < 0:
            raise CalibrationError(
                f"symmetric uint8 needs a non-negative range, got ({lo}, {hi}); "
                "use int8 or symmetric=False"
            )
        scale, zero_point = max(abs(lo), abs(hi)) / _SYMMETRIC_QMAX[dtype], 0
    else:
        qmin, qmax = QUANT_LIMITS[dtype]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / (qmax - qmin)
        zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax)) if scale > 0 else 0
    if not scale >= _MIN_SCALE:
        logger.debug("degenerate range (%g, %g): using scale 1.0", min_val, max_val)
        return 1.0, 0
    return float(scale), zero_point


def weight_scales(w: Any, axis: int = 0) -> np.ndarray:
    """Symmetric int8 per-channel weight scales: ``max|w| / 127`` along every slice of ``axis``.

    Channels that are entirely zero get scale 1.0 (their quantized weights are 0).

    Returns:
        float32 array of length ``w.shape[axis]`` (oneDNN takes f32 scales).

    Raises:
        CalibrationError: the weights contain NaN or infinity.
        ValueError: ``w`` is a scalar or ``axis`` is out of range.
    """
    data = to_numpy(w)
    if data.ndim == 0:
        raise ValueError("weight_scales needs an array with at least one dimension")
    if not -data.ndim <= axis < data.ndim:
        raise ValueError(f"axis {axis} is out of range for weights of shape {data.shape}")
    if data.size == 0:
        return np.ones(data.shape[axis], dtype=np.float32)
    reduce_axes = tuple(i for i in range(data.ndim) if i != axis % data.ndim)
    amax = np.max(np.abs(data.astype(np.float64)), axis=reduce_axes)
    if not np.all(np.isfinite(amax)):
        bad = np.flatnonzero(~np.isfinite(amax))
        raise CalibrationError(f"weights contain non-finite values in channels {bad[:10].tolist()}")
    scales = (amax / 127.0).astype(np.float32)
    scales[scales < _MIN_SCALE] = 1.0
    return scales


def choose_activation_dtype(
    min_val: float, max_val: float, quantized_dtype: Literal["auto", "int8", "uint8"] = "auto"
) -> QuantDtype:
    """MXNet's ``quantized_dtype`` rule: ``"auto"`` picks uint8 for ``min >= 0``, else int8.

    An explicit ``"int8"`` or ``"uint8"`` is returned as is; forcing uint8 on a range with
    negative values logs a warning (the negative values will saturate at 0).
    """
    if quantized_dtype not in ("auto", "int8", "uint8"):
        raise ValueError(f"quantized_dtype must be auto, int8 or uint8, got {quantized_dtype!r}")
    lo, _ = _check_bounds(min_val, max_val)
    if quantized_dtype == "auto":
        return "uint8" if lo >= 0 else "int8"
    if quantized_dtype == "uint8" and lo < 0:
        logger.warning("uint8 forced on range (%g, %g): negative values will saturate", lo, max_val)
    return quantized_dtype


def _as_bound(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(()))
    if isinstance(value, (numbers.Real, np.integer, np.floating)):
        return float(value)
    return None


def validate_ranges(
    ranges: Mapping[str, Any], expected_layers: Iterable[str] | None = None
) -> dict[str, Range]:
    """Check calibration ranges; return them normalised to ``{name: (float, float)}``.

    Every problem found is reported in one :class:`CalibrationError`: a non-mapping input,
    non-str names, entries that are not a pair of real numbers, NaN or infinite bounds,
    ``min > max``, and ``expected_layers`` without a range (named). Layers that are not
    expected are kept.
    """
    if not isinstance(ranges, Mapping):
        raise CalibrationError(
            f"calibration ranges must be a mapping name -> (min, max), got {type(ranges).__name__}"
        )
    problems: list[str] = []
    clean: dict[str, Range] = {}
    for name, entry in ranges.items():
        if not isinstance(name, str):
            problems.append(f"layer name {name!r} is a {type(name).__name__}, not a str")
            continue
        if isinstance(entry, (str, bytes)) or not isinstance(entry, (tuple, list, np.ndarray)):
            problems.append(f"{name!r}: expected a (min, max) pair, got {type(entry).__name__}")
            continue
        if len(entry) != 2:
            problems.append(f"{name!r}: expected a (min, max) pair, got {len(entry)} values")
            continue
        lo, hi = _as_bound(entry[0]), _as_bound(entry[1])
        if lo is None or hi is None:
            kinds = ", ".join(type(v).__name__ for v in entry)
            problems.append(f"{name!r}: bounds must be real numbers, got ({kinds})")
        elif not (math.isfinite(lo) and math.isfinite(hi)):
            problems.append(f"{name!r}: non-finite range ({lo}, {hi})")
        elif lo > hi:
            problems.append(f"{name!r}: min {lo} > max {hi}")
        else:
            clean[name] = (lo, hi)
    if expected_layers is not None:
        expected = [expected_layers] if isinstance(expected_layers, str) else list(expected_layers)
        missing = sorted(set(expected) - set(ranges))
        if missing:
            shown = ", ".join(repr(m) for m in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            problems.append(f"no range for {len(missing)} layer(s): {shown}{more}")
    if problems:
        raise CalibrationError("invalid calibration ranges:\n  " + "\n  ".join(problems))
    return clean
