"""A streaming, bounded-memory histogram over a zero-symmetric range ``[-R, R]``.

The first tensor with a non-zero value fixes the bin width: ``num_bins`` bins exactly cover
``[-max|x|, max|x|]`` (MXNet's layout). Later tensors with a larger ``max|x|``:

* extend the histogram with bins of the same width on both sides (exact, as MXNet does),
  while the bin count stays within ``capacity``;
* otherwise merge every ``m`` adjacent bins into one (exact, because the new edges are a
  subset of the old ones) and keep just enough bins to cover the new range.

``capacity`` is ``3 * num_bins`` for an odd ``num_bins`` (the merge factor must be odd to
keep a bin centred on zero) and ``2 * num_bins`` for an even one. With these capacities the
observed range ``[-max|x|, max|x|]`` is always covered by at least ``num_bins`` bins, and
memory is at most ``capacity`` counters whatever the data. Tensors are never stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from .collector import CalibrationCollector
from .compat import to_numpy
from .errors import CalibrationError

__all__ = ["StreamingHistogram"]

# Elements binned per step; bounds the temporaries of one ``add`` call.
_CHUNK = 1 << 22


class StreamingHistogram:
    """Histogram of a stream of tensors on a zero-symmetric grid (see module docstring).

    Attributes:
        num_bins: requested resolution; an odd count puts a bin centred on zero.
        capacity: the most bins ever held.
        counts: int64 bin counts (``None`` until a non-zero value has been seen).
        bin_width: width of every bin (0.0 until a non-zero value has been seen).
        min, max: extremes of all values seen.
        total: number of values seen.
    """

    def __init__(self, num_bins: int) -> None:
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
        self.num_bins = num_bins
        self._odd = num_bins % 2 == 1
        self.capacity = num_bins * (3 if self._odd else 2)
        self.counts: np.ndarray | None = None
        self.bin_width = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.total = 0
        self._zeros_before_grid = 0

    @property
    def half_range(self) -> float:
        """``R``: the histogram covers ``[-R, R]`` (0.0 before the grid exists)."""
        return 0.0 if self.counts is None else self.counts.size * self.bin_width / 2

    @property
    def abs_max(self) -> float:
        """Largest observed ``|x|`` (0.0 when nothing was seen)."""
        return 0.0 if self.total == 0 else max(abs(self.min), abs(self.max))

    def edges(self) -> np.ndarray:
        """Bin edges, ``len(counts) + 1`` values from ``-R`` to ``R``."""
        if self.counts is None:
            return np.zeros(1)
        n = self.counts.size
        return (np.arange(n + 1) - n / 2) * self.bin_width

    def dense_counts(self) -> np.ndarray:
        """The counts, including values seen before the grid existed (all exact zeros)."""
        if self.counts is None:
            return np.array([self._zeros_before_grid], dtype=np.int64)
        return self.counts

    def add(self, data: np.ndarray) -> None:
        """Add every element of ``data`` (a numeric numpy array) to the histogram.

        Raises:
            CalibrationError: ``data`` contains NaN or infinity.
        """
        if data.size == 0:
            return
        lo, hi = float(np.min(data)), float(np.max(data))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise CalibrationError(f"non-finite values in calibration data (min={lo}, max={hi})")
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.total += int(data.size)
        abs_max = max(abs(lo), abs(hi))
        if abs_max == 0.0:
            self._add_zeros(int(data.size))
            return
        if self.counts is None:
            self._create_grid(abs_max)
        else:
            self._cover(abs_max)
        self._bin(data)

    # -- internals ------------------------------------------------------------------------

    def _add_zeros(self, n: int) -> None:
        if self.counts is None:
            self._zeros_before_grid += n
        else:
            self.counts[self.counts.size // 2] += n

    def _create_grid(self, abs_max: float) -> None:
        self.bin_width = 2.0 * abs_max / self.num_bins
        self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.counts[self.num_bins // 2] += self._zeros_before_grid
        self._zeros_before_grid = 0

    def _count_for(self, half_width_in_bins: float) -> int:
        """Smallest bin count of the right parity covering ``half_width_in_bins`` each side."""
        n = math.ceil(2.0 * half_width_in_bins)
        if (n % 2 == 1) != self._odd:
            n += 1
        return max(n, 1 if self._odd else 2)

    def _cover(self, abs_max: float) -> None:
        """Grow the grid so that ``[-abs_max, abs_max]`` lies inside it."""
        assert self.counts is not None
        size, width = self.counts.size, self.bin_width
        if abs_max <= size * width / 2:
            return
        needed = self._count_for(abs_max / width)
        if needed <= self.capacity:
            self.counts = np.pad(self.counts, (needed - size) // 2)
            return
        # Merge ``factor`` old bins per new bin; odd factors keep the zero-centred bin.
        step = 2 if self._odd else 1
        factor = 1 + step
        while self.capacity * factor * width / 2 < abs_max:
            factor += step
        new_width = factor * width
        new_size = max(self._count_for(abs_max / new_width), self._count_for(size / (2 * factor)))
        shift = (new_size * factor - size) // 2
        target = (np.arange(size) + shift) // factor
        merged = np.zeros(new_size, dtype=np.int64)
        np.add.at(merged, target, self.counts)
        self.counts, self.bin_width = merged, new_width

    def _bin(self, data: np.ndarray) -> None:
        assert self.counts is not None
        size = self.counts.size
        work = np.float32 if data.dtype in (np.float16, np.float32) else np.float64
        inv_width = work(1.0 / self.bin_width)
        offset = work(size / 2)
        flat = data.reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            x = flat[start : start + _CHUNK].astype(work)  # always a fresh temporary
            x *= inv_width
            x += offset
            np.floor(x, out=x)
            idx = x.astype(np.intp)
            np.clip(idx, 0, size - 1, out=idx)  # values on the outer edges
            self.counts += np.bincount(idx, minlength=size)


class HistogramCollector(CalibrationCollector):
    """Base of collectors that keep one streaming histogram per layer (bounded memory)."""

    num_bins: int

    def __init__(self, num_bins: int, include_layers: Iterable[str] | None = None) -> None:
        super().__init__(include_layers)
        self.num_bins = num_bins
        self._hists: dict[str, StreamingHistogram] = {}

    @property
    def histograms(self) -> Mapping[str, StreamingHistogram]:
        """Read-only view of the per-layer histograms."""
        return MappingProxyType(self._hists)

    def collect(self, name: str, op_name: str, arr: Any) -> None:
        """Add ``arr`` to the histogram of layer ``name``."""
        if not self.is_included(name):
            return
        hist = self._hists.get(name)
        if hist is None:
            hist = self._hists[name] = StreamingHistogram(self.num_bins)
        try:
            hist.add(to_numpy(arr))
        except CalibrationError as err:
            raise CalibrationError(f"layer {name!r} ({op_name}): {err}") from None
