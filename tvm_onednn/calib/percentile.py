"""Percentile calibration: clip the rare extremes of each layer, from a streaming histogram.

Two modes:

* ``symmetric=True`` (default): ``t`` is the ``percentile``-th percentile of ``|x|``; the
  range is ``(0, t)`` when the layer's observed min is >= 0 (and ``quantized_dtype`` allows
  uint8), otherwise ``(-t, t)``. This matches symmetric int8 / zero-point-free uint8.
* ``symmetric=False`` (side-wise): ``(P_{100-p}(x), P_p(x))``, the lower and upper
  percentiles of the signed values, for asymmetric (zero-point) quantization.

Percentiles are read off the cumulative histogram with linear interpolation inside the
crossing bin, so they are accurate to one bin width (``2 * max|x| / num_bins`` or better)
and are always clamped to the observed extremes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

import numpy as np

from .collector import Range
from .histogram import HistogramCollector, StreamingHistogram

__all__ = ["PercentileCollector", "histogram_abs_percentile", "histogram_percentile"]

logger = logging.getLogger(__name__)


def _interpolate(cdf: np.ndarray, points: np.ndarray, target: float) -> float:
    """Value at which the piecewise-linear CDF through ``(points, cdf)`` reaches ``target``."""
    if target <= 0:
        return float(points[0])
    k = int(np.searchsorted(cdf, target, side="left"))
    if k >= cdf.size:
        return float(points[-1])
    below, above = cdf[k - 1], cdf[k]
    frac = (target - below) / (above - below)  # above > below: cdf[k-1] < target <= cdf[k]
    return float(points[k - 1] + frac * (points[k] - points[k - 1]))


def histogram_abs_percentile(hist: StreamingHistogram, percentile: float) -> float:
    """The ``percentile``-th percentile (0-100) of ``|x|`` over the histogram."""
    if hist.counts is None or hist.total == 0:
        return 0.0
    counts, width = hist.counts, hist.bin_width
    half = counts.size // 2
    if counts.size % 2:  # bin ``half`` is centred on zero and folds onto [0, w/2]
        folded = counts[half:].copy()
        folded[1:] += counts[:half][::-1]
        points = np.concatenate(([0.0], (np.arange(half + 1) + 0.5) * width))
    else:  # zero is the edge between bins half-1 and half
        folded = counts[half:] + counts[:half][::-1]
        points = np.arange(half + 1) * width
    cdf = np.concatenate(([0], np.cumsum(folded)))
    value = _interpolate(cdf, points, percentile / 100.0 * hist.total)
    return min(value, hist.abs_max)


def histogram_percentile(hist: StreamingHistogram, percentile: float) -> float:
    """The ``percentile``-th percentile (0-100) of the signed values over the histogram."""
    if hist.counts is None or hist.total == 0:
        return 0.0
    cdf = np.concatenate(([0], np.cumsum(hist.counts)))
    value = _interpolate(cdf, hist.edges(), percentile / 100.0 * hist.total)
    return float(np.clip(value, hist.min, hist.max))


class PercentileCollector(HistogramCollector):
    """Per-layer streaming histograms, reduced to percentile ranges by :meth:`post_collect`.

    Args:
        percentile: in (0, 100]; e.g. 99.99 drops the top 0.01 % of magnitudes.
        num_bins: histogram resolution (see :class:`StreamingHistogram`).
        symmetric: percentile of ``|x|`` (True) or side-wise signed percentiles (False);
            see the module docstring.
        quantized_dtype: with ``symmetric=True``: ``"auto"``/``"uint8"`` give ``(0, t)``
            for layers whose observed min is >= 0; ``"int8"`` always gives ``(-t, t)``.
        include_layers: layers to observe (``None``: all).
    """

    def __init__(
        self,
        percentile: float = 99.99,
        num_bins: int = 2048,
        symmetric: bool = True,
        quantized_dtype: Literal["auto", "int8", "uint8"] = "auto",
        include_layers: Iterable[str] | None = None,
    ) -> None:
        if not 0.0 < float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
        if quantized_dtype not in ("auto", "int8", "uint8"):
            raise ValueError(
                f"quantized_dtype must be auto, int8 or uint8, got {quantized_dtype!r}"
            )
        StreamingHistogram(num_bins)  # validates num_bins early
        self.percentile = float(percentile)
        self.symmetric = symmetric
        self.quantized_dtype = quantized_dtype
        super().__init__(num_bins, include_layers)

    def post_collect(self) -> dict[str, Range]:
        """Return the percentile range of every observed layer."""
        ranges: dict[str, Range] = {}
        for name, hist in self._hists.items():
            if hist.total == 0:
                continue
            if self.symmetric:
                t = histogram_abs_percentile(hist, self.percentile)
                unsigned = hist.min >= 0 and self.quantized_dtype in ("auto", "uint8")
                ranges[name] = (0.0, t) if unsigned else (-t, t)
            else:
                ranges[name] = (
                    histogram_percentile(hist, 100.0 - self.percentile),
                    histogram_percentile(hist, self.percentile),
                )
            logger.debug("layer %s: min=%g max=%g range=%s", name, hist.min, hist.max, ranges[name])
        return ranges
