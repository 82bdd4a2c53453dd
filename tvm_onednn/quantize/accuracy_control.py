"""Accuracy-controlled quantization: keep the most sensitive layers float32 until the
validation metric is within budget (``quantize(..., validation=(data, metric_fn), max_drop)``).

In the spirit of NNCF's ``quantize_with_accuracy_control``:

1. the float32 and the int8 models run on the validation data; ``metric_fn`` scores both
   (higher is better). When ``metric(fp32) - metric(int8) <= max_drop`` nothing changes;
2. otherwise every int8 layer is ranked by a cheap estimate of the error it adds: the
   noise-to-signal power of quantizing what it reads in int8 (input, int8 residual) and its
   weights, measured on a few validation batches of the float32 model (one instrumented run,
   no int8 build). Its output's quantization is its consumers' (they quantize it anyway);
3. the layers are reverted to float32 in that order, one more at a time, each step a real
   build and metric evaluation, until the drop is within ``max_drop`` (or none is left).

Calibration ranges are reused: a step only re-plans, re-realizes and builds. The
:class:`AccuracyControlReport` (``QuantizeReport.accuracy_control``) lists the layers kept
float32, the metric before and after, and how many int8 models were evaluated.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .. import pipeline as _pipeline  # noqa: F401  (registers relax_pipeline="onednn")
from ..calib import CalibrationCollector, CalibrationError, as_calib_array
from ..calib.collector import Range
from ..calib.scales import QUANT_LIMITS
from ..target import host_target_spec
from .annotate import CHAIN_KINDS, QuantPlan, replan
from .calibrate import _Inputs, run_calibration
from .realize import TensorQuant, realize, tensor_quant_params
from .weights import quantize_weight, weight_encoding

__all__ = ["AccuracyControlReport", "Metric", "check_validation", "control_accuracy",
           "top1_agreement"]  # fmt: skip

#: ``metric_fn(outputs, fp32_outputs) -> float`` (higher is better): ``outputs`` holds the
#: model's output for each validation batch (an array, or a list of arrays for several
#: outputs), ``fp32_outputs`` the float32 model's, in the same order.
Metric = Callable[[list, list], float]

#: Validation batches whose float32 tensors rank the layers.
RANKING_BATCHES = 4
#: The reason of a layer the accuracy control keeps float32 (``reason_kind="accuracy"``).
REVERTED_REASON = "kept float32 by accuracy control (validation metric)"


def _first(output: Any) -> np.ndarray:
    return np.asarray(output[0] if isinstance(output, (list, tuple)) else output)


def top1_agreement(outputs: list, fp32_outputs: list) -> float:
    """Fraction of samples whose top-1 class (argmax of the last axis of the first output)
    is the float32 model's: the common ``metric_fn``."""
    if len(outputs) != len(fp32_outputs) or not outputs:
        raise ValueError(
            f"top1_agreement: {len(outputs)} outputs vs {len(fp32_outputs)} float32 outputs"
        )
    got = np.concatenate([_first(o).reshape(-1, _first(o).shape[-1]).argmax(-1) for o in outputs])
    ref = np.concatenate(
        [_first(o).reshape(-1, _first(o).shape[-1]).argmax(-1) for o in fp32_outputs]
    )
    return float(np.mean(got == ref))


@dataclass
class AccuracyControlReport:
    """What the accuracy control did (``QuantizeReport.accuracy_control``).

    Attributes:
        max_drop: the budget: largest allowed ``metric_fp32 - metric``.
        metric_fp32: the float32 model's metric.
        metric_int8: the metric with every layer ``quantize`` chose in int8 (before).
        metric: the metric of the returned model (after).
        reverted: layers kept float32 to meet the budget, in the order they were reverted.
        ranking: ``(layer, estimated error)`` of every int8 layer, most sensitive first.
        evaluations: int8 models built and evaluated on the validation data.
        validation_batches: batches in the validation data.
    """

    max_drop: float
    metric_fp32: float
    metric_int8: float
    metric: float
    reverted: list[str] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)
    evaluations: int = 0
    validation_batches: int = 0

    @property
    def drop(self) -> float:
        """``metric_fp32 - metric`` of the returned model."""
        return self.metric_fp32 - self.metric

    @property
    def met(self) -> bool:
        """Whether the returned model is within the budget."""
        return self.drop <= self.max_drop + 1e-12

    def summary(self) -> str:
        status = "met" if self.met else "NOT met (every candidate layer reverted)"
        kept = ", ".join(self.reverted) if self.reverted else "none"
        return (
            f"accuracy control: metric fp32 {self.metric_fp32:.4f}, int8 {self.metric_int8:.4f} "
            f"-> {self.metric:.4f} (drop {self.drop:.4f}, budget {self.max_drop:g}: {status}); "
            f"kept float32: {kept}; {self.evaluations} int8 evaluation(s) on "
            f"{self.validation_batches} batch(es)"
        )

    def as_dict(self) -> dict:
        return {
            "max_drop": self.max_drop,
            "metric_fp32": self.metric_fp32,
            "metric_int8": self.metric_int8,
            "metric": self.metric,
            "drop": self.drop,
            "met": self.met,
            "reverted": list(self.reverted),
            "ranking": [[name, score] for name, score in self.ranking],
            "evaluations": self.evaluations,
            "validation_batches": self.validation_batches,
        }


# --- arguments ------------------------------------------------------------------------------


def check_validation(validation: Any, max_drop: Any) -> tuple[list, Metric, float]:
    """``(batches, metric_fn, max_drop)`` from ``quantize``'s arguments, or a precise error.

    Raises:
        ValueError: ``max_drop`` without ``validation``, a malformed ``validation``, an
            empty data set or a ``max_drop`` that is not a finite number >= 0.
    """
    if validation is None:
        if max_drop is not None:
            raise ValueError("max_drop needs validation=(data, metric_fn)")
        return [], top1_agreement, 0.0
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise ValueError(
            "validation must be a pair (data, metric_fn), got "
            f"{type(validation).__name__}"
            + (f" of length {len(validation)}" if isinstance(validation, (tuple, list)) else "")
        )
    data, metric = validation
    if not callable(metric):
        raise ValueError(
            f"validation=(data, metric_fn): metric_fn must be callable "
            f"(outputs, fp32_outputs) -> float, got {type(metric).__name__}"
        )
    if isinstance(data, (str, bytes, np.ndarray)) or not isinstance(data, Iterable):
        raise ValueError(
            "validation=(data, metric_fn): data must be an iterable of batches (like "
            f"calib_data), got {type(data).__name__}"
        )
    batches = list(data)
    if not batches:
        raise ValueError("validation=(data, metric_fn): data holds no batch")
    if max_drop is None:
        max_drop = 0.01
    if (
        isinstance(max_drop, bool)
        or not isinstance(max_drop, numbers.Real)
        or not math.isfinite(max_drop)
        or max_drop < 0
    ):
        raise ValueError(f"max_drop must be a finite number >= 0, got {max_drop!r}")
    return batches, metric, float(max_drop)


# --- evaluation -----------------------------------------------------------------------------


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "numpy"):
        return value.numpy()
    return [_to_numpy(v) for v in value]


class _Evaluator:
    """Builds modules with the ``"onednn"`` pipeline and scores them on the validation data."""

    def __init__(self, mod: tvm.IRModule, batches: Sequence, metric: Metric):
        inputs = _Inputs(mod["main"])
        self.args = []
        for i, batch in enumerate(batches):
            try:
                args = inputs(batch, i)
            except CalibrationError as err:
                raise ValueError(str(err).replace("calibration batch", "validation batch")) from None
            sizes = {a.shape[0] for a in args if a.ndim}
            if inputs.batch is not None and sizes != {inputs.batch}:
                raise ValueError(
                    f"validation batch {i}: batch size {sorted(sizes)}, the model takes "
                    f"{inputs.batch} (validation batches are run as given, not regrouped)"
                )
            self.args.append(args)
        self.metric = metric
        self.target = tvm.target.Target(host_target_spec())
        self.fp32_outputs = self.outputs(mod)
        self.metric_fp32 = self.score(self.fp32_outputs)
        self.evaluations = 0

    def outputs(self, mod: tvm.IRModule) -> list:
        executable = tvm.compile(mod, target=self.target, relax_pipeline="onednn")
        vm = relax.VirtualMachine(executable, tvm.cpu())
        return [_to_numpy(vm["main"](*[tvm.runtime.tensor(a) for a in args])) for args in self.args]

    def score(self, outputs: list) -> float:
        value = self.metric(outputs, self.fp32_outputs)
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"metric_fn must return a real number, got {type(value).__name__}: {value!r}"
            )
        if not math.isfinite(value):
            raise ValueError(f"metric_fn returned {value}, not a finite number")
        return float(value)

    def __call__(self, qmod: tvm.IRModule) -> float:
        self.evaluations += 1
        return self.score(self.outputs(qmod))


# --- ranking --------------------------------------------------------------------------------


class _Sampler(CalibrationCollector):
    """Keeps the float32 tensors of a few batches (for the error estimates)."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors: dict[str, list[np.ndarray]] = {}

    def collect(self, name: str, op_name: str, arr: Any) -> None:
        self.tensors.setdefault(name, []).append(np.asarray(arr, np.float32))

    def post_collect(self) -> dict[str, Range]:
        return {}


def _quantization_error(x: np.ndarray, quant: TensorQuant) -> np.ndarray:
    """``Q(x) - x`` for ``quant`` (symmetric, zero point 0)."""
    qmin, qmax = QUANT_LIMITS[quant.dtype]
    scale = quant.scale if quant.scale else max(float(np.abs(x).max()), 1e-30) / qmax
    return np.clip(np.round(x / scale), qmin, qmax) * scale - x


def _noise(x: np.ndarray, quant: TensorQuant, axis: int | None = None,
           channel_weights: np.ndarray | None = None) -> float:
    """Noise-to-signal power of quantizing ``x`` with ``quant``.

    With ``channel_weights`` (one per slice of ``axis``: how much the layer's output depends
    on that input channel, ``sum w^2``) the powers are summed per channel with those weights:
    a first-order estimate of the noise-to-signal power of the layer's output, which sees
    that a channel the weights ignore does not matter and that channels crushed by another
    channel's outliers do.
    """
    error = _quantization_error(x, quant)
    if channel_weights is None:
        return float(np.sum(error * error) / max(float(np.sum(x * x)), 1e-30))
    others = tuple(d for d in range(x.ndim) if d != axis % x.ndim)
    noise = np.sum(error * error, axis=others) @ channel_weights
    signal = np.sum(x * x, axis=others) @ channel_weights
    return float(noise / max(float(signal), 1e-30))


def _channel_weights(site, channels: int) -> tuple[int, np.ndarray | None]:
    """``(channel axis of the input, per-input-channel sum w^2)`` of a conv2d / matmul."""
    from .. import relax_utils as ru

    weight = ru.constant_array(site.annotated["rhs"]).astype(np.float64)
    if site.layer.kind == "conv2d":
        if weight.shape[1] == channels:  # dense conv: OIHW
            return 1, np.sum(weight * weight, axis=(0, 2, 3))
        if weight.shape[1] == 1 and weight.shape[0] == channels:  # depthwise
            return 1, np.sum(weight * weight, axis=(1, 2, 3))
        return 1, None  # other grouped convs: every channel counts the same
    if weight.ndim == 2 and weight.shape[0] == channels:  # matmul [K, N]
        return -1, np.sum(weight * weight, axis=1)
    return -1, None


def _weight_noise(site, src_dtype: str, granularity: str) -> float:
    from .. import relax_utils as ru

    weight = ru.constant_array(site.annotated["rhs"]).astype(np.float32)
    conv = site.layer.kind == "conv2d"
    axis, reduce_axis = (0, 1) if conv else (weight.ndim - 1, weight.ndim - 2)
    encoding = weight_encoding(src_dtype, site.layer.kind)
    w_q, scales = quantize_weight(weight, axis, granularity, encoding, reduce_axis)
    shape = [1] * weight.ndim
    if scales.ndim:
        shape[axis] = -1
    error = w_q.astype(np.float32) * scales.reshape(shape) - weight
    return float(np.sum(error * error) / max(float(np.sum(weight * weight)), 1e-30))


def rank_layers(
    plan: QuantPlan,
    ranges: Mapping[str, Range],
    batches: Sequence,
    quantized_dtype: str,
    granularity: str,
) -> list[tuple[str, float]]:
    """``(layer, estimated error)`` of every int8 layer, largest first: the noise-to-signal
    power its int8 input (weighted per channel by its weights, see :func:`_noise`), int8
    residual and weights add, on the float32 tensors of ``batches`` (ties keep graph
    order)."""
    sampler = _Sampler()
    run_calibration(plan, batches, sampler)
    tensors = tensor_quant_params(plan, ranges, quantized_dtype)

    def samples(name: str) -> np.ndarray | None:
        arrays = sampler.tensors.get(name)
        return np.concatenate(arrays) if arrays else None

    scores = []
    for site in plan.sites.values():
        if not site.layer.quantized:
            continue
        src = plan.range_of[site.data]
        x = samples(src)
        score = 0.0
        if x is not None:
            if site.layer.kind in CHAIN_KINDS:
                axis, weights = _channel_weights(site, x.shape[1 if x.ndim == 4 else -1])
                score = _noise(x, tensors[src], axis, weights)
            else:
                score = _noise(x, tensors[src])
        residual = plan.range_of.get(site.residual) if site.residual is not None else None
        r = samples(residual) if residual is not None else None
        if r is not None:
            score += _noise(r, tensors[residual])
        if site.layer.kind in CHAIN_KINDS:
            score += _weight_noise(site, tensors[src].dtype, granularity)
        scores.append((site.layer.name, score))
    return sorted(scores, key=lambda item: -item[1])


# --- control --------------------------------------------------------------------------------


def _ranges_for(plan: QuantPlan, by_var: Mapping[relax.Var, Range]) -> dict[str, Range]:
    return {n: by_var[o.var] for n, o in plan.observed.items() if o.var in by_var}


def control_accuracy(
    mod: tvm.IRModule,
    plan: QuantPlan,
    ranges: Mapping[str, Range],
    batches: Sequence,
    metric: Metric,
    max_drop: float,
    quantized_dtype: str = "auto",
    quantize_granularity: str = "channel-wise",
) -> tuple[QuantPlan, dict[str, Range], tvm.IRModule, AccuracyControlReport]:
    """Revert the most sensitive int8 layers of ``plan`` to float32 until the validation
    metric drops by at most ``max_drop``; ``(plan, ranges, qmod, report)`` of the result.

    ``mod`` is the float32 model (the reference), ``ranges`` the calibrated ranges of
    ``plan``. See the module docstring for the procedure.
    """
    evaluate = _Evaluator(mod, batches, metric)
    qmod = realize(plan, ranges, quantized_dtype, quantize_granularity)
    metric_int8 = evaluate(qmod)
    report = AccuracyControlReport(
        max_drop, evaluate.metric_fp32, metric_int8, metric_int8,
        validation_batches=len(batches),
    )  # fmt: skip
    if report.met:
        report.evaluations = evaluate.evaluations
        return plan, dict(ranges), qmod, report
    by_var = {plan.observed[n].var: r for n, r in ranges.items()}
    report.ranking = rank_layers(
        plan, ranges, batches[:RANKING_BATCHES], quantized_dtype, quantize_granularity
    )
    best = (plan, dict(ranges), qmod)
    for name, _ in report.ranking:
        report.reverted.append(name)
        candidate = replan(plan, dict.fromkeys(report.reverted, REVERTED_REASON))
        cranges = _ranges_for(candidate, by_var)
        cmod = realize(candidate, cranges, quantized_dtype, quantize_granularity)
        report.metric = evaluate(cmod)
        best = (candidate, cranges, cmod)
        if report.met:
            break
    report.evaluations = evaluate.evaluations
    return (*best, report)
