"""int8 post-training quantization: ``tvm_onednn.quantize(mod, calib_data)``.

The counterpart of MXNet 2.0's ``quantize_net`` (oneDNN flow):

1. prepare: BatchNorm folding and canonical forms (``prepare_for_onednn``);
2. annotate: group float32 chains as oneDNN fuses them and mark the quantizable layers
   (:func:`quantizable_layers` lists them with their names);
3. calibrate: run the float32 model on ``calib_data`` and collect ranges
   (``naive`` min/max, ``entropy`` KL, ``percentile``, or a ``custom`` collector);
4. realize: write a quantize/dequantize module with s8 weights and u8/s8 activations.

The result compiles with ``tvm.compile(qmod, target, relax_pipeline="onednn")``, where the
int8 pattern table fuses every QDQ chain into one int8 oneDNN primitive, and also with TVM's
own ``"default"`` pipeline, where it runs as a fake-quantized model.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable

import tvm

from ..byoc.partition import prepare_for_onednn
from ..calib import COLLECTORS, CalibrationCollector, CalibrationError, make_collector
from .annotate import (
    Layer,
    LayerTable,
    QuantPlan,
    plan_quantization,
    quantizable_layers,
)
from .calibrate import calibrate, instrument
from .realize import realize
from .weights import GRANULARITIES, quantize_weight

__all__ = [
    "CALIB_MODES",
    "Layer",
    "LayerTable",
    "QuantPlan",
    "calibrate",
    "instrument",
    "plan_quantization",
    "quantizable_layers",
    "quantize",
    "quantize_weight",
    "realize",
]

logger = logging.getLogger(__name__)

CALIB_MODES = ("naive", "entropy", "percentile", "custom", "none")
QUANTIZED_DTYPES = ("auto", "int8", "uint8")


def _check_arguments(calib_mode, collector, quantized_dtype, quantize_granularity, num_batches):
    known = sorted(set(CALIB_MODES) | set(COLLECTORS))
    if calib_mode not in known:
        raise ValueError(f"unknown calib_mode {calib_mode!r}; expected one of {known}")
    if calib_mode == "custom" and not isinstance(collector, CalibrationCollector):
        raise ValueError(
            "calib_mode='custom' needs collector=<a CalibrationCollector instance>, "
            f"got {type(collector).__name__}"
        )
    if calib_mode != "custom" and collector is not None:
        raise ValueError(f"collector is only used with calib_mode='custom', not {calib_mode!r}")
    if quantized_dtype not in QUANTIZED_DTYPES:
        raise ValueError(
            f"quantized_dtype must be one of {QUANTIZED_DTYPES}, got {quantized_dtype!r}"
        )
    if quantize_granularity not in GRANULARITIES:
        raise ValueError(
            f"quantize_granularity must be one of {GRANULARITIES}, got {quantize_granularity!r}"
        )
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ValueError(f"num_calib_batches must be a positive int or None, got {num_batches!r}")


def _collector(calib_mode: str, collector, quantized_dtype: str) -> CalibrationCollector:
    if calib_mode == "custom":
        return collector
    cls = COLLECTORS[calib_mode]
    if "quantized_dtype" in inspect.signature(cls).parameters:
        return make_collector(calib_mode, quantized_dtype=quantized_dtype)
    return make_collector(calib_mode)


def quantize(
    mod: tvm.IRModule,
    calib_data: Iterable | None = None,
    *,
    calib_mode: str = "naive",
    num_calib_batches: int | None = None,
    collector: CalibrationCollector | None = None,
    exclude_layers: Iterable[str] | None = None,
    exclude_layers_match: Iterable[str] | None = None,
    exclude_operators: Iterable[str] | None = None,
    quantized_dtype: str = "auto",
    quantize_granularity: str = "channel-wise",
) -> tvm.IRModule:
    """Quantize a float32 Relax module to int8; returns a new QDQ module (``mod`` unchanged).

    Args:
        mod: the float32 model (e.g. from ``tvm_onednn.from_onnx``), static shapes.
        calib_data: iterable of batches (dicts ``{input: array}``, arrays, or tuples whose
            first items are the inputs, e.g. a DataLoader's ``(data, label)``). Not used
            with ``calib_mode="none"``.
        calib_mode: ``"naive"`` (min/max), ``"entropy"`` (KL divergence), ``"percentile"``,
            ``"custom"`` (with ``collector``) or ``"none"``: no calibration, scales computed
            at run time from each tensor's ``max|x|`` (slower, less accurate, and it stays
            with TVM's kernels; not recommended).
        num_calib_batches: use at most this many batches of ``calib_data``.
        collector: the :class:`~tvm_onednn.calib.CalibrationCollector` of
            ``calib_mode="custom"``; when its ``include_layers`` is None it is set to the
            tensors that need ranges.
        exclude_layers: layer names to keep in float32 (see :func:`quantizable_layers`).
        exclude_layers_match: regular expressions (``re.search``) of layer names to keep in
            float32.
        exclude_operators: kinds to keep in float32: ``"conv2d"``, ``"matmul"`` (alias
            ``"dense"``), ``"pool"`` or one pool kind (``"max_pool2d"``, ...).
        quantized_dtype: activations: ``"auto"`` (u8 when the range is non-negative, else
            s8), or force ``"int8"`` / ``"uint8"``.
        quantize_granularity: weight scales ``"channel-wise"`` (per output channel) or
            ``"tensor-wise"``.

    Raises:
        ValueError: invalid arguments (unknown mode, custom without collector, ...).
        CalibrationError: unusable calibration data or ranges.
    """
    _check_arguments(
        calib_mode, collector, quantized_dtype, quantize_granularity, num_calib_batches
    )
    if calib_mode != "none" and calib_data is None:
        raise CalibrationError(f"calib_mode={calib_mode!r} needs calib_data (or use 'none')")
    plan = plan_quantization(
        prepare_for_onednn(mod), exclude_layers, exclude_layers_match, exclude_operators
    )
    logger.info("quantize: %s", str(LayerTable(plan.layers)).replace("\n", "\n  "))
    if not plan.range_names:
        logger.warning("quantize: no layer can be quantized; the model stays float32")
    ranges: dict | None = None if calib_mode == "none" else {}
    if ranges is not None and plan.range_names:
        active = _collector(calib_mode, collector, quantized_dtype)
        if active.include_layers is None:
            active.include_layers = plan.range_names
        ranges = calibrate(plan, calib_data, active, num_calib_batches)
    return realize(plan, ranges, quantized_dtype, quantize_granularity)
