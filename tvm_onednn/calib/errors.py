"""Errors raised by the calibration package."""

from __future__ import annotations

__all__ = ["CalibrationError"]


class CalibrationError(ValueError):
    """Calibration data or calibration ranges are unusable.

    Raised for non-finite statistics, inverted ranges (``min > max``), ranges missing for
    layers that need them, and range entries of the wrong type. It subclasses ``ValueError``
    so callers that already catch ``ValueError`` keep working.
    """
