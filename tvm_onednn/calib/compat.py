"""Array conversion, and the small MXNet shim that lets MXNet-style collectors run unchanged.

Collectors receive whatever the runtime hands out (a numpy array, a ``tvm.runtime.Tensor``,
a torch tensor, ...). :func:`to_numpy` turns any of these into a numpy array.

MXNet user collectors typically start ``collect`` with ``arr = arr.copyto(cpu()).asnumpy()``.
If the quantizer wraps each observed tensor with :func:`as_calib_array` before calling
``collector.collect``, that line keeps working after changing only the import
(``from tvm_onednn.calib import CalibrationCollector, cpu``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CalibArray", "as_calib_array", "cpu", "to_numpy"]


def to_numpy(arr: Any) -> np.ndarray:
    """Return ``arr`` as a plain numeric numpy array (no copy when it already is one).

    Accepts numpy arrays (and subclasses), objects with ``.numpy()`` (TVM tensors, torch),
    objects with ``.asnumpy()`` (MXNet NDArray) and anything ``np.asarray`` understands
    (``__array__``, lists, scalars). Non-standard float types such as bfloat16 are widened
    to float32.

    Raises:
        TypeError: the value cannot be turned into a numeric array.
    """
    if isinstance(arr, np.ndarray):
        out = np.asarray(arr)
    elif callable(getattr(arr, "numpy", None)):
        out = np.asarray(arr.numpy())
    elif callable(getattr(arr, "asnumpy", None)):
        out = np.asarray(arr.asnumpy())
    else:
        try:
            out = np.asarray(arr)
        except Exception as err:  # re-raised as TypeError with context
            raise TypeError(f"cannot convert {type(arr).__name__} to a numpy array") from err
    if out.dtype.kind not in "biuf":
        try:
            out = out.astype(np.float32)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"calibration needs numeric data, got an array of dtype {out.dtype}"
            ) from err
    return out


class _Device:
    """Placeholder device returned by :func:`cpu`; calibration data always lives on the host."""

    def __repr__(self) -> str:
        return "cpu(0)"


_CPU = _Device()


def cpu(device_id: int = 0) -> _Device:
    """MXNet-compatible ``cpu()`` for :meth:`CalibArray.copyto` (``device_id`` is ignored)."""
    return _CPU


class CalibArray(np.ndarray):
    """Read-only numpy view that also speaks the few NDArray methods MXNet collectors call."""

    def asnumpy(self) -> np.ndarray:
        """Return the data as a plain numpy array (MXNet ``NDArray.asnumpy``)."""
        return np.asarray(self)

    def copyto(self, device: Any = None) -> CalibArray:
        """Return ``self``: the data is already on the host (MXNet ``NDArray.copyto``)."""
        return self

    def as_in_context(self, device: Any = None) -> CalibArray:
        """Return ``self`` (MXNet ``NDArray.as_in_context``)."""
        return self

    def asscalar(self) -> Any:
        """Return the single element (MXNet ``NDArray.asscalar``)."""
        return self.item()


def as_calib_array(arr: Any) -> CalibArray:
    """Wrap an observed tensor for ``collector.collect`` (zero-copy for numpy input).

    The view is read-only so a collector cannot corrupt the tensor it observes.
    """
    view = to_numpy(arr).view(CalibArray)
    view.flags.writeable = False
    return view
