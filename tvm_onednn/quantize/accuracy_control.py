"""Accuracy-controlled quantization: keep the most sensitive layers float32 until the
validation metric is within budget (``quantize(..., validation=(data, metric_fn), max_drop)``).

In the spirit of NNCF's ``quantize_with_accuracy_control``:

1. the float32 and the int8 models run on the validation data; ``metric_fn`` scores both
   (higher is better). When ``metric(fp32) - metric(int8) <= max_drop`` nothing changes;
2. otherwise every int8 layer is ranked by how much keeping it alone float32 lowers the
   output error (relative squared error against float32) on the first
   :data:`RANKING_BATCHES` validation batches: one build and a few runs per layer, no
   metric evaluation. (A per-tensor noise estimate from the float32 tensors alone was tried
   first: on MobileNetV2 it ranked the layers that matter last and the control reverted
   nearly every layer.)
3. the layers are reverted to float32 in that order, one more at a time, each step a real
   build and metric evaluation, until the drop is within ``max_drop`` (or none is left).

Calibration ranges are reused: a step only re-plans, re-realizes and builds. The
:class:`AccuracyControlReport` (``QuantizeReport.accuracy_control``) lists the layers kept
float32, the metric before and after, and how many int8 models were evaluated.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .. import pipeline as _pipeline  # noqa: F401  (registers relax_pipeline="onednn")
from ..calib import CalibrationError
from ..calib.collector import Range
from ..target import host_target_spec
from .annotate import QuantPlan, replan
from .calibrate import ModelInputs
from .realize import realize

logger = logging.getLogger(__name__)

__all__ = ["AccuracyControlReport", "Metric", "check_validation", "control_accuracy",
           "top1_agreement"]  # fmt: skip

#: ``metric_fn(outputs, fp32_outputs) -> float`` (higher is better): ``outputs`` holds the
#: model's output for each validation batch (an array, or a list of arrays for several
#: outputs), ``fp32_outputs`` the float32 model's, in the same order.
Metric = Callable[[list, list], float]

#: Validation batches the ranking runs (per layer).
RANKING_BATCHES = 8
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
        ranking: ``(layer, output error recovered by keeping it float32)`` of every int8
            layer, most sensitive first (empty when the budget was met at once).
        evaluations: int8 models whose metric was evaluated on all the validation data.
        builds: models compiled in all (float32 reference, ranking, evaluations).
        validation_batches: batches in the validation data.
    """

    max_drop: float
    metric_fp32: float
    metric_int8: float
    metric: float
    reverted: list[str] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)
    evaluations: int = 0
    builds: int = 0
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
            f"kept float32: {kept}; {self.evaluations} metric evaluation(s) on "
            f"{self.validation_batches} batch(es), {self.builds} build(s)"
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
            "builds": self.builds,
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
        inputs = ModelInputs(mod["main"])
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
        self.builds = 0
        self.fp32_outputs = self.outputs(mod)
        self.metric_fp32 = self.score(self.fp32_outputs)
        self.evaluations = 0
        self.last_outputs: list = []

    def outputs(self, mod: tvm.IRModule, count: int | None = None) -> list:
        """Build ``mod`` and run it on the first ``count`` (all) validation batches."""
        executable = tvm.compile(mod, target=self.target, relax_pipeline="onednn")
        vm = relax.VirtualMachine(executable, tvm.cpu())
        self.builds += 1
        return [
            _to_numpy(vm["main"](*[tvm.runtime.tensor(a) for a in args]))
            for args in self.args[:count]
        ]

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
        """The metric of ``qmod`` on all validation batches (its outputs: ``last_outputs``)."""
        self.evaluations += 1
        self.last_outputs = self.outputs(qmod)
        return self.score(self.last_outputs)


# --- ranking --------------------------------------------------------------------------------


def _output_error(outputs: list, reference: list) -> float:
    """Mean relative squared error of the first output, over the batches."""
    errors = []
    for out, ref in zip(outputs, reference):
        out, ref = _first(out).astype(np.float64), _first(ref).astype(np.float64)
        errors.append(np.sum((out - ref) ** 2) / max(float(np.sum(ref * ref)), 1e-30))
    return float(np.mean(errors))


def rank_layers(
    evaluate: _Evaluator,
    plan: QuantPlan,
    by_var: Mapping[relax.Var, Range],
    int8_outputs: list,
    quantized_dtype: str,
    granularity: str,
    input_means: Mapping[str, np.ndarray] | None = None,
) -> list[tuple[str, float]]:
    """``(layer, output error recovered)`` of every int8 layer, largest first.

    For each layer, the model with that layer alone kept float32 is built and run on the
    first :data:`RANKING_BATCHES` validation batches; its score is how much that lowers the
    relative squared error of the output against float32 (``int8_outputs``: the all-int8
    model's outputs). One build per layer, no metric evaluation.
    """
    count = min(RANKING_BATCHES, len(evaluate.args))
    base = _output_error(int8_outputs[:count], evaluate.fp32_outputs[:count])
    scores = []
    for site in plan.sites.values():
        if not site.layer.quantized:
            continue
        candidate = replan(plan, {site.layer.name: REVERTED_REASON})
        qmod = realize(candidate, _ranges_for(candidate, by_var), quantized_dtype, granularity,
                       input_means=input_means)
        outputs = evaluate.outputs(qmod, count)
        error = _output_error(outputs, evaluate.fp32_outputs[:count])
        scores.append((site.layer.name, base - error))
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
    input_means: Mapping[str, np.ndarray] | None = None,
) -> tuple[QuantPlan, dict[str, Range], tvm.IRModule, AccuracyControlReport]:
    """Revert the most sensitive int8 layers of ``plan`` to float32 until the validation
    metric drops by at most ``max_drop``; ``(plan, ranges, qmod, report)`` of the result.

    ``mod`` is the float32 model (the reference), ``ranges`` the calibrated ranges of
    ``plan``. See the module docstring for the procedure.
    """
    evaluate = _Evaluator(mod, batches, metric)
    qmod = realize(plan, ranges, quantized_dtype, quantize_granularity,
                   input_means=input_means)
    metric_int8 = evaluate(qmod)
    report = AccuracyControlReport(
        max_drop, evaluate.metric_fp32, metric_int8, metric_int8,
        validation_batches=len(batches),
    )  # fmt: skip
    if report.met:
        report.evaluations, report.builds = evaluate.evaluations, evaluate.builds
        return plan, dict(ranges), qmod, report
    by_var = {plan.observed[n].var: r for n, r in ranges.items()}
    report.ranking = rank_layers(
        evaluate, plan, by_var, evaluate.last_outputs, quantized_dtype, quantize_granularity,
        input_means,
    )  # fmt: skip
    best = (plan, dict(ranges), qmod)
    for name, _ in report.ranking:
        report.reverted.append(name)
        candidate = replan(plan, dict.fromkeys(report.reverted, REVERTED_REASON))
        cranges = _ranges_for(candidate, by_var)
        cmod = realize(candidate, cranges, quantized_dtype, quantize_granularity,
                       input_means=input_means)
        report.metric = evaluate(cmod)
        best = (candidate, cranges, cmod)
        if report.met:
            break
    report.evaluations, report.builds = evaluate.evaluations, evaluate.builds
    if report.reverted and len(report.reverted) == len(report.ranking):
        logger.warning(
            "quantize: accuracy control kept all %d ranked layers float32 to meet max_drop=%g "
            "(int8 metric %.4f, float32 %.4f): nothing runs in int8. On a small validation set "
            "a budget below one sample's share of the metric allows no changed prediction; "
            "use more validation data or a larger max_drop",
            len(report.reverted), max_drop, report.metric_int8, report.metric_fp32,
        )  # fmt: skip
    return (*best, report)
