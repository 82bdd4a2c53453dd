"""``calib_mode`` name -> collector class, as a registry (MXNet's ``calib_mode`` values).

``calib_mode="custom"`` is not in the registry: the caller passes its own
:class:`CalibrationCollector` instance instead of a name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .collector import CalibrationCollector
from .entropy import EntropyCollector
from .naive import NaiveCollector
from .percentile import PercentileCollector

__all__ = ["COLLECTORS", "make_collector", "register_collector"]

_REGISTRY: dict[str, type[CalibrationCollector]] = {
    "naive": NaiveCollector,
    "entropy": EntropyCollector,
    "percentile": PercentileCollector,
}

#: Read-only view of the registered calibration modes.
COLLECTORS: Mapping[str, type[CalibrationCollector]] = MappingProxyType(_REGISTRY)


def register_collector(calib_mode: str, cls: type[CalibrationCollector]) -> None:
    """Register ``cls`` under ``calib_mode`` (an existing name is an error)."""
    if not (isinstance(cls, type) and issubclass(cls, CalibrationCollector)):
        raise TypeError(f"{cls!r} is not a CalibrationCollector subclass")
    if calib_mode in _REGISTRY:
        raise ValueError(f"calib_mode {calib_mode!r} is already registered")
    _REGISTRY[calib_mode] = cls


def make_collector(calib_mode: str, **kwargs: Any) -> CalibrationCollector:
    """Build the collector registered for ``calib_mode`` with ``kwargs``.

    Raises:
        ValueError: unknown ``calib_mode`` (the message lists the known ones).
    """
    try:
        cls = _REGISTRY[calib_mode]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(
            f"unknown calib_mode {calib_mode!r}; expected one of: {known} "
            "(for 'custom', pass a CalibrationCollector instance)"
        ) from None
    return cls(**kwargs)
