"""Naive calibration: the running min and max of every observed layer."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .collector import CalibrationCollector
from .compat import to_numpy
from .errors import CalibrationError

__all__ = ["NaiveCollector"]

logger = logging.getLogger(__name__)


class NaiveCollector(CalibrationCollector):
    """Keeps the running ``(min, max)`` of each layer; O(1) memory per layer.

    The observed extremes are used directly as the quantization range (MXNet's
    ``calib_mode="naive"``).
    """

    def collect(self, name: str, op_name: str, arr: Any) -> None:
        """Fold the min and max of ``arr`` into the running range of layer ``name``."""
        if not self.is_included(name):
            return
        data = to_numpy(arr)
        if data.size == 0:
            logger.debug("layer %s (%s): empty tensor ignored", name, op_name)
            return
        lo, hi = float(np.min(data)), float(np.max(data))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise CalibrationError(
                f"layer {name!r} ({op_name}) produced non-finite values during calibration "
                f"(min={lo}, max={hi})"
            )
        if name in self.min_max_dict:
            old_lo, old_hi = self.min_max_dict[name]
            lo, hi = min(old_lo, lo), max(old_hi, hi)
        self.min_max_dict[name] = (lo, hi)
        logger.debug("layer %s (%s): range [%g, %g]", name, op_name, lo, hi)
