"""int8 post-training quantization: ``tvm_onednn.quantize(mod, calib_data)``.

The counterpart of MXNet 2.0's ``quantize_net`` (oneDNN flow):

1. prepare: BatchNorm folding and canonical forms (``prepare_for_onednn``);
2. annotate: group float32 chains as oneDNN fuses them and mark the quantizable layers
   (:func:`quantizable_layers` lists them with their names);
3. calibrate: run the float32 model on ``calib_data`` and collect ranges
   (``naive`` min/max, ``entropy`` KL, ``percentile``, or a ``custom`` collector);
4. realize: write a quantize/dequantize module with s8 weights and u8/s8 activations;
5. optionally (``validation=(data, metric_fn), max_drop=...``), accuracy control: keep the
   most sensitive layers float32 until the validation metric is within budget
   (:mod:`.accuracy_control`).

The result compiles with ``tvm.compile(qmod, target, relax_pipeline="onednn")``, where the
int8 pattern table fuses every QDQ chain into one int8 oneDNN primitive, and also with TVM's
own ``"default"`` pipeline, where it runs as a fake-quantized model.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, overload

import tvm

from ..byoc.partition import FLOAT_MATMUL_MATH_ATTR, prepare_for_onednn
from ..calib import COLLECTORS, CalibrationCollector, CalibrationError, make_collector
from ..calib.collector import Range
from .accuracy_control import (
    REVERTED_REASON,
    AccuracyControlReport,
    Metric,
    check_validation,
    control_accuracy,
    top1_agreement,
)
from .annotate import (
    REASON_KINDS,
    Layer,
    LayerTable,
    STEM_REASON,
    QuantPlan,
    plan_quantization,
    replan,
    quantizable_layers,
    without_ranges,
)
from .annotate import float_stem as _float_stem
from .bias_correction import InputMeans
from .calibrate import CalibrationRun, calibrate, instrument, run_calibration
from .realize import realize
from .report import LayerReport, QuantizeReport, build_report
from .weights import GRANULARITIES, quantize_weight

__all__ = [
    "AccuracyControlReport",
    "CALIB_MODES",
    "REASON_KINDS",
    "Layer",
    "LayerReport",
    "LayerTable",
    "QuantPlan",
    "QuantizeReport",
    "calib_modes",
    "calibrate",
    "instrument",
    "plan_quantization",
    "quantizable_layers",
    "quantize",
    "quantize_weight",
    "CalibrationDataRequired",
    "realize",
    "resolve_auto_mode",
    "run_calibration",
    "top1_agreement",
]

logger = logging.getLogger(__name__)

#: ``calib_mode`` values that are not collector names.
NON_COLLECTOR_MODES = ("auto", "custom", "none")
#: What ``calib_mode="auto"`` picks for a model with conv layers (or with accuracy control).
AUTO_STATIC_MODE = "entropy"
QUANTIZED_DTYPES = ("auto", "int8", "uint8")
#: ``float_matmul_math`` values.
FLOAT_MATMUL_MATHS = ("bf16", "f32")


def calib_modes() -> tuple[str, ...]:
    """Every ``calib_mode`` ``quantize`` takes now: the registered collectors
    (:func:`tvm_onednn.calib.register_collector`), then ``"auto"``, ``"custom"`` and
    ``"none"``."""
    return (*COLLECTORS, *NON_COLLECTOR_MODES)


class _CalibModes(Sequence):
    """``CALIB_MODES``: a live read-only view of :func:`calib_modes` (it follows the registry)."""

    def __getitem__(self, index):
        return calib_modes()[index]

    def __len__(self) -> int:
        return len(calib_modes())

    def __iter__(self) -> Iterator[str]:
        return iter(calib_modes())

    def __contains__(self, value) -> bool:
        return value in calib_modes()

    def __repr__(self) -> str:
        return repr(calib_modes())


#: The ``calib_mode`` values (registered collectors + ``"auto"``, ``"custom"``, ``"none"``), always
#: current: a collector registered later is in it too.
CALIB_MODES: Sequence[str] = _CalibModes()


def _check_arguments(calib_mode, collector, quantized_dtype, quantize_granularity, num_batches):
    known = calib_modes()
    if calib_mode not in known:
        raise ValueError(f"unknown calib_mode {calib_mode!r}; expected one of {list(known)}")
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


class CalibrationDataRequired(CalibrationError):
    """``calib_mode="auto"`` chose a calibrated mode for this model but no ``calib_data``
    was given; ``chosen`` is that mode."""

    def __init__(self, chosen: str) -> None:
        super().__init__(
            f"calib_mode='auto' chose {chosen!r} for this model (it has conv layers or "
            "accuracy control) and needs calib_data (or use calib_mode='none')"
        )
        self.chosen = chosen


def resolve_auto_mode(plan: QuantPlan, accuracy_control: bool) -> str:
    """What ``calib_mode="auto"`` means for ``plan``: ``"none"`` (dynamic quantization)
    when every layer it quantizes is a matmul and there is no accuracy control, else
    :data:`AUTO_STATIC_MODE`.

    Matmul-only models (transformer encoders, MLPs) keep far more accuracy with per-call
    ranges: all-MiniLM-L6-v2's int8 embedding cosine with fp32 is 0.994 dynamic vs 0.86
    (entropy) / 0.978 (naive) with static ranges (``benchmarks/int8_accuracy.py --models
    minilm``); static ranges would save the per-call range pass, but not at equal accuracy.
    Conv nets need static ranges: the dynamic mode leaves their conv chains fake-quantized
    in TVM.
    """
    kinds = {layer.kind for layer in plan.layers if layer.quantized}
    if not accuracy_control and kinds & {"matmul"} and not kinds & {"conv2d"}:
        return "none"
    return AUTO_STATIC_MODE


def _collector(calib_mode: str, collector, quantized_dtype: str) -> CalibrationCollector:
    if calib_mode == "custom":
        return collector
    cls = COLLECTORS[calib_mode]
    if "quantized_dtype" in inspect.signature(cls).parameters:
        return make_collector(calib_mode, quantized_dtype=quantized_dtype)
    return make_collector(calib_mode)


def _drop_unusable(plan: QuantPlan, run: CalibrationRun) -> tuple[QuantPlan, dict[str, Range]]:
    """The plan without the layers that need a range calibration could not give, and the
    ranges under that plan's names (replanning may rename an input range)."""
    if run.unusable:
        logger.warning(
            "quantize: no usable calibration range for %s; the layers needing them stay float32",
            ", ".join(f"{n} ({why})" for n, why in run.unusable.items()),
        )
    usable = {plan.observed[n].var: r for n, r in run.ranges.items() if n in plan.observed}
    plan = without_ranges(plan, run.unusable)
    # Replanning only drops needs; should one appear anyway, it is not calibrated: float32.
    missing = {n: "not calibrated" for n, o in plan.observed.items() if o.var not in usable}
    if missing:
        plan = without_ranges(plan, missing)
    return plan, {n: usable[o.var] for n, o in plan.observed.items()}


@overload
def quantize(
    mod: tvm.IRModule,
    calib_data: Iterable | None = ...,
    *,
    calib_mode: str = ...,
    num_calib_batches: int | None = ...,
    collector: CalibrationCollector | None = ...,
    exclude_layers: Iterable[str] | None = ...,
    exclude_layers_match: Iterable[str] | None = ...,
    exclude_operators: Iterable[str] | None = ...,
    quantized_dtype: str = ...,
    quantize_granularity: str = ...,
    validation: tuple[Iterable, Metric] | None = ...,
    max_drop: float | None = ...,
    bias_correction: bool = ...,
    float_stem: bool = ...,
    float_matmul_math: str = ...,
    return_report: Literal[False] = ...,
) -> tvm.IRModule: ...


@overload
def quantize(
    mod: tvm.IRModule,
    calib_data: Iterable | None = ...,
    *,
    calib_mode: str = ...,
    num_calib_batches: int | None = ...,
    collector: CalibrationCollector | None = ...,
    exclude_layers: Iterable[str] | None = ...,
    exclude_layers_match: Iterable[str] | None = ...,
    exclude_operators: Iterable[str] | None = ...,
    quantized_dtype: str = ...,
    quantize_granularity: str = ...,
    validation: tuple[Iterable, Metric] | None = ...,
    max_drop: float | None = ...,
    bias_correction: bool = ...,
    float_stem: bool = ...,
    float_matmul_math: str = ...,
    return_report: Literal[True],
) -> tuple[tvm.IRModule, QuantizeReport]: ...


def quantize(
    mod: tvm.IRModule,
    calib_data: Iterable | None = None,
    *,
    calib_mode: str = "auto",
    num_calib_batches: int | None = None,
    collector: CalibrationCollector | None = None,
    exclude_layers: Iterable[str] | None = None,
    exclude_layers_match: Iterable[str] | None = None,
    exclude_operators: Iterable[str] | None = None,
    quantized_dtype: str = "auto",
    quantize_granularity: str = "channel-wise",
    validation: tuple[Iterable, Metric] | None = None,
    max_drop: float | None = None,
    bias_correction: bool = True,
    float_stem: bool = True,
    float_matmul_math: str = "bf16",
    return_report: bool = False,
):
    """Quantize a float32 Relax module to int8; returns a new QDQ module (``mod`` unchanged).

    A layer that cannot be quantized stays float32 and the rest is quantized: one the int8
    oneDNN chains do not run, one that needs a range calibration cannot give (inf / NaN
    observed, none from the collector), one excluded by the caller. ``return_report=True``
    says which and why (:class:`QuantizeReport`).

    Args:
        mod: the float32 model (e.g. from ``tvm_onednn.from_onnx``); its inputs may have
            a symbolic batch (``R.Tensor(("n", 3, 224, 224))``), which the int8 module keeps.
        calib_data: iterable of batches (dicts ``{input: array}``, arrays, or tuples whose
            first items are the inputs, e.g. a DataLoader's ``(data, label)``), of any batch
            size: a model built for a static batch gets the samples regrouped into its
            batch (the last one filled up with the first samples). Not used with
            ``calib_mode="none"``.
        calib_mode: ``"auto"`` (default): ``"none"`` for a model whose quantized layers are
            all matmuls (transformers, MLPs; ``calib_data`` is then not needed, and not
            used), else ``"entropy"`` (:func:`resolve_auto_mode` says why); the report
            names the mode used. ``"entropy"``: KL-divergence thresholds (MXNet's method) for
            signed tensors, averaged over the calibration batches, the 99.99th percentile
            for non-negative ones; the most accurate
            on held-out images, see ``benchmarks/int8_accuracy.py``. ``"naive"`` (min/max),
            ``"percentile"``, any name registered with
            :func:`tvm_onednn.calib.register_collector`, ``"custom"`` (with ``collector``)
            or ``"none"``: no calibration; each matmul's input range is computed per call
            inside oneDNN (dynamic quantization, as onnxruntime's ``quantize_dynamic``),
            conv chains stay fake-quantized with TVM's kernels. :data:`CALIB_MODES` lists
            them.
        num_calib_batches: use at most this many batches of ``calib_data``.
        collector: the :class:`~tvm_onednn.calib.CalibrationCollector` of
            ``calib_mode="custom"``; when its ``include_layers`` is None it is set to the
            tensors that need ranges (a layer needing a tensor it leaves out stays float32).
        exclude_layers: layer names to keep in float32 (see :func:`quantizable_layers`).
        exclude_layers_match: regular expressions (``re.search``) of layer names to keep in
            float32.
        exclude_operators: kinds to keep in float32: ``"conv2d"``, ``"matmul"`` (alias
            ``"dense"``), ``"pool"`` or one pool kind (``"max_pool2d"``, ...).
        quantized_dtype: activations: ``"auto"`` (u8 when the range is non-negative, else
            s8), or force ``"int8"`` / ``"uint8"``.
        quantize_granularity: weight scales ``"channel-wise"`` (per output channel) or
            ``"tensor-wise"``.
        validation: ``(data, metric_fn)`` turns on accuracy control
            (:mod:`.accuracy_control`): ``data`` is an iterable of batches (as
            ``calib_data``, each of the model's batch size), ``metric_fn(outputs,
            fp32_outputs) -> float`` (higher is better) scores the per-batch outputs of a
            model against the float32 model's, e.g. :func:`top1_agreement`. The most
            sensitive layers are kept float32 until ``metric(fp32) - metric(int8) <=
            max_drop``; ``report.accuracy_control`` says which and the metrics.
        max_drop: the accuracy control's budget, an absolute drop of the metric (default
            0.01 with ``validation``; an error without it).
        bias_correction: add to each int8 conv / matmul's bias the mean shift its weight
            rounding causes, from its input's mean per channel and kernel tap on the
            calibration data (:mod:`.bias_correction`; no extra pass). On by default
            (docs/quantization.md, "Bias correction"); ``False`` turns it off.
        float_stem: keep float32 a first conv reading a model input when a depthwise conv
            reads its output, and that depthwise conv (MobileNet's first two layers; a
            ResNet has no such stem and stays all int8). On by default; ``False``
            quantizes them (see :func:`~.annotate.float_stem`).
        float_matmul_math: ``"bf16"`` (default) or ``"f32"``: the math of the matmuls
            that stay float32 because both operands are activations (a transformer's
            attention scores and context). ``"bf16"`` lets oneDNN round their operands to
            bfloat16 (float32 accumulation) on CPUs with AMX (MiniLM int8: 3-5 % less time
            per call, the same embedding cosine with float32; docs/quantization.md,
            "Attention matmuls"); other CPUs compute them in float32 either way, and so
            does the runtime's fused attention kernel (AVX2 or better), which takes the
            scores -> softmax -> context chains it recognizes.
        return_report: also return the :class:`QuantizeReport`: ``(qmod, report)``.

    Raises:
        ValueError: invalid arguments (unknown mode, custom without collector, unknown
            ``exclude_layers`` names, ...).
        CalibrationError: unusable calibration data (empty, names / ranks / non-batch dims /
            dtypes that do not match the model, a symbolic dim with two sizes in one batch)
            or malformed ranges from a collector's ``post_collect``.
    """
    _check_arguments(
        calib_mode, collector, quantized_dtype, quantize_granularity, num_calib_batches
    )
    if float_matmul_math not in FLOAT_MATMUL_MATHS:
        raise ValueError(f"float_matmul_math must be one of {FLOAT_MATMUL_MATHS}, "
                         f"got {float_matmul_math!r}")  # fmt: skip
    val_batches, metric, budget = check_validation(validation, max_drop)
    if validation is not None and calib_mode == "none":
        raise ValueError("validation (accuracy control) needs calibrated ranges, not "
                         "calib_mode='none'")
    if calib_mode not in ("none", "auto") and calib_data is None:
        raise CalibrationError(f"calib_mode={calib_mode!r} needs calib_data (or use 'none')")
    plan = plan_quantization(
        prepare_for_onednn(mod), exclude_layers, exclude_layers_match, exclude_operators
    )
    if calib_mode == "auto":
        calib_mode = resolve_auto_mode(plan, validation is not None)
        logger.info("quantize: calib_mode='auto' -> %r", calib_mode)
        if calib_mode != "none" and calib_data is None:
            raise CalibrationDataRequired(calib_mode)
    stem = _float_stem(plan) if float_stem else []
    if stem:
        plan = replan(plan, dict.fromkeys(stem, STEM_REASON))
    if not plan.range_names:
        logger.warning("quantize: no layer can be quantized; the model stays float32")
    ranges: dict | None = None if calib_mode == "none" else {}
    input_means: dict | None = None
    run: CalibrationRun | None = None
    if ranges is not None and plan.range_names:
        active = _collector(calib_mode, collector, quantized_dtype)
        if active.include_layers is None:
            active.include_layers = plan.range_names
        means = InputMeans(plan) if bias_correction else None
        run = run_calibration(
            plan, calib_data, active, num_calib_batches, means.observe if means else None
        )
        plan, ranges = _drop_unusable(plan, run)
        input_means = means.means() if means else None
    control = None
    if validation is not None and plan.range_names and ranges is not None:
        plan, ranges, qmod, control = control_accuracy(
            mod, plan, ranges, val_batches, metric, budget, quantized_dtype,
            quantize_granularity, input_means,
        )  # fmt: skip
    else:
        qmod = realize(plan, ranges, quantized_dtype, quantize_granularity,
                       input_means=input_means)  # fmt: skip
    report = build_report(
        plan,
        ranges,
        run,
        calib_mode=calib_mode,
        quantized_dtype=quantized_dtype,
        quantize_granularity=quantize_granularity,
    )
    if control is not None:
        report.set_accuracy_control(control, REVERTED_REASON)
    if any(layer.quantized for layer in plan.layers):
        qmod = qmod.with_attr(FLOAT_MATMUL_MATH_ATTR, float_matmul_math)
        report.float_matmul_math = float_matmul_math
    logger.info("quantize:\n%s", report)
    return (qmod, report) if return_report else qmod
