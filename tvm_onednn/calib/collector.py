"""The calibration collector contract (compatible with MXNet 2.0's ``CalibrationCollector``).

The quantizer runs the float model on calibration data and calls
``collector.collect(name, op_name, arr)`` for every observed tensor. When all batches are
done it calls ``collector.post_collect()`` and gets ``{layer name: (min, max)}``, from which
scales are derived (see :mod:`tvm_onednn.calib.scales`).

``include_layers`` names the layers whose statistics the quantizer needs. ``None`` means
"all"; the quantizer fills it in before calibration when it is still ``None``.

MXNet users often subclass without calling ``super().__init__()``; both ``include_layers``
and ``min_max_dict`` therefore have class-level defaults, and ``min_max_dict`` is created
per instance on first use, so such subclasses work unchanged.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

__all__ = ["CalibrationCollector", "Range"]

#: A calibrated ``(min, max)`` pair.
Range = tuple[float, float]


class _PerInstanceDict:
    """Non-data descriptor giving each instance its own dict, created on first access.

    A plain class attribute ``min_max_dict = {}`` would be shared by every instance whose
    ``__init__`` does not call ``super().__init__()``.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        value: dict = {}
        # Stored in the instance dict, which shadows this (non-data) descriptor from now on.
        obj.__dict__[self._name] = value
        return value


class CalibrationCollector(abc.ABC):
    """Base class of all calibration collectors.

    Subclasses implement :meth:`collect` and, unless they keep their result in
    ``self.min_max_dict``, :meth:`post_collect`.

    Attributes:
        include_layers: frozenset of layer names to observe, or ``None`` for all. Accepts
            any iterable of names on assignment.
        min_max_dict: per-instance ``{name: (min, max)}`` scratch dict (MXNet convention);
            :meth:`post_collect` returns it unless overridden.
    """

    _include_layers: frozenset[str] | None = None
    min_max_dict = _PerInstanceDict()

    def __init__(self, include_layers: Iterable[str] | None = None) -> None:
        self.include_layers = include_layers
        self.min_max_dict = {}

    @property
    def include_layers(self) -> frozenset[str] | None:
        """Names of the layers to observe; ``None`` means every layer."""
        return self._include_layers

    @include_layers.setter
    def include_layers(self, names: Iterable[str] | None) -> None:
        if names is None:
            self._include_layers = None
            return
        if isinstance(names, (str, bytes)):
            raise TypeError(
                "include_layers must be an iterable of layer names, not a single string; "
                f"use [{names!r}]"
            )
        try:
            layers = frozenset(names)
        except TypeError as err:
            raise TypeError(
                f"include_layers must be an iterable of layer names or None, "
                f"got {type(names).__name__}"
            ) from err
        bad = sorted(repr(n) for n in layers if not isinstance(n, str))
        if bad:
            raise TypeError(f"include_layers must contain str names, got {', '.join(bad)}")
        self._include_layers = layers

    def is_included(self, name: str) -> bool:
        """Whether statistics of layer ``name`` should be collected."""
        layers = self.include_layers
        return layers is None or name in layers

    @abc.abstractmethod
    def collect(self, name: str, op_name: str, arr: Any) -> None:
        """Observe one tensor.

        Args:
            name: name of the observed node (layer output); the key of the result.
            op_name: name of the operator producing it (one operator may have several
                observed outputs, each with its own ``name``).
            arr: the tensor: a numpy array or anything :func:`~tvm_onednn.calib.to_numpy`
                converts (``.numpy()``, ``.asnumpy()``, ``__array__``).
        """

    def post_collect(self) -> dict[str, Range]:
        """Return ``{layer name: (min, max)}`` once all data has been collected.

        The default returns the content of ``self.min_max_dict`` (as MXNet does), with the
        bounds converted to Python floats.
        """
        return {name: (float(lo), float(hi)) for name, (lo, hi) in self.min_max_dict.items()}

    def __repr__(self) -> str:
        layers = self.include_layers
        shown = "all" if layers is None else f"{len(layers)} layers"
        return f"{type(self).__name__}(include_layers={shown})"
