"""Calibration for int8 quantization: collectors, range -> scale functions, validation.

Pure numpy. The flow follows MXNet 2.0's oneDNN quantization:

1. the quantizer picks a collector (``make_collector("naive" | "entropy" | "percentile")``,
   or a user's :class:`CalibrationCollector` for ``calib_mode="custom"``) and, when its
   ``include_layers`` is ``None``, fills in the layers that need ranges;
2. it runs the float model on calibration batches, calling
   ``collector.collect(name, op_name, as_calib_array(tensor))`` for observed tensors;
3. ``collector.post_collect()`` returns ``{name: (min, max)}``; :func:`validate_ranges`
   checks it, then :func:`choose_activation_dtype` and :func:`range_to_scale` give each
   layer its dtype, scale and zero point; :func:`weight_scales` handles weights.
"""

from .collector import CalibrationCollector, Range
from .compat import CalibArray, as_calib_array, cpu, to_numpy
from .entropy import EntropyCollector
from .errors import CalibrationError
from .naive import NaiveCollector
from .percentile import PercentileCollector
from .registry import COLLECTORS, make_collector, register_collector
from .scales import (
    choose_activation_dtype,
    range_to_scale,
    validate_ranges,
    weight_scales,
)

__all__ = [
    "COLLECTORS",
    "CalibArray",
    "CalibrationCollector",
    "CalibrationError",
    "EntropyCollector",
    "NaiveCollector",
    "PercentileCollector",
    "Range",
    "as_calib_array",
    "choose_activation_dtype",
    "cpu",
    "make_collector",
    "range_to_scale",
    "register_collector",
    "to_numpy",
    "validate_ranges",
    "weight_scales",
]
