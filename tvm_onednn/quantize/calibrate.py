"""Calibration: run the float32 model on sample inputs and stream tensors to a collector.

The *instrumented* module is the prepared module whose ``main`` also returns every tensor
that needs a range (:attr:`QuantPlan.observed`). It is compiled once with the ``"onednn"``
pipeline (float32 oneDNN; TVM's ``"default"`` pipeline if that fails), then run on each
batch of ``calib_data``; every observed tensor goes to
``collector.collect(name, op_name, as_calib_array(tensor))``. ``collector.post_collect()``
then gives the ranges, checked by :func:`tvm_onednn.calib.validate_ranges`.

``calib_data`` is any iterable of batches. A batch is a dict ``{input name: array}``, a
single array (single-input models), or a tuple / list whose first ``n`` items are the
``n`` model inputs in order (so ``(data, label)`` batches of a DataLoader work). Arrays are
numpy arrays or anything with ``.numpy()`` / ``.asnumpy()`` (torch, TVM, MXNet tensors).
Batches may have any batch size: a model with a symbolic batch runs each as it is; a model
built for a static batch gets the samples regrouped into its batch (:func:`regroup`).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from .. import pipeline as _pipeline  # noqa: F401  (registers relax_pipeline="onednn")
from .. import relax_utils as ru
from ..calib import (
    CalibrationCollector,
    CalibrationError,
    as_calib_array,
    to_numpy,
    validate_ranges,
)
from ..calib.collector import Range
from ..target import host_target_spec
from .annotate import QuantPlan
from .inline import CompositeInliner, with_main

__all__ = ["BACKENDS", "CalibrationRun", "ModelInputs", "calibrate", "instrument", "run_calibration"]

logger = logging.getLogger(__name__)


@mutator
class _Instrumenter(CompositeInliner):
    """Inlines the chains back and makes every observed tensor visible after its block."""

    def __init__(self, plan: QuantPlan):
        super().__init__(plan.module)
        self.wanted = {obs.var: name for name, obs in plan.observed.items()}
        self.found: dict[str, relax.Var] = {}

    def after_binding(self, var: relax.Var, new_var: relax.Var) -> None:
        name = self.wanted.get(var)
        if name is None:
            return
        if isinstance(new_var, relax.DataflowVar):
            new_var = self.builder_.emit_output(new_var, f"observe_{name}")
        self.found[name] = new_var


def instrument(plan: QuantPlan) -> tvm.IRModule:
    """The prepared float32 module whose ``main`` returns ``(outputs, *observed tensors)``.

    The observed tensors come in the order of ``plan.range_names``.
    """
    main = plan.module["main"]
    inst = _Instrumenter(plan)
    new_main = inst.visit_expr(main)
    params = dict(zip(main.params, new_main.params))
    observed = [
        inst.found[name] if name in inst.found else params[obs.var]
        for name, obs in plan.observed.items()
    ]
    body = new_main.body
    new_body = relax.BlockBuilder().normalize(
        relax.SeqExpr(body.blocks, relax.Tuple([body.body, *observed]))
    )
    new_main = relax.Function(new_main.params, new_body, attrs=new_main.attrs)
    return with_main(plan.module, new_main)


def first_line(err: BaseException) -> str:
    """``Type: first line`` of an error (TVM errors carry long tracebacks in their text)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


#: The backends the calibration module is built for, in order of preference.
BACKENDS = ("onednn", "default")


class _NoBackend(CalibrationError):
    """The calibration module failed to build or to run on every backend."""


class _Calibrator:
    """The instrumented module, built for the first backend that compiles and runs it.

    ``"onednn"`` (float32 oneDNN kernels) first; when its build, or its first run, fails,
    TVM's ``"default"`` pipeline (slow, untuned kernels, but it compiles every Relax op).
    ``fallbacks`` records each backend given up on, with the error's first line.
    """

    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.target = tvm.target.Target(host_target_spec())
        self.fallbacks: list[tuple[str, str]] = []  # (backend, first line of its error)
        self.backend: str | None = None
        self.vm: relax.VirtualMachine | None = None
        self.verified = False  # a batch ran on the current backend
        self._next = iter(BACKENDS)
        self._advance()

    def _advance(self) -> None:
        for backend in self._next:
            try:
                executable = tvm.compile(self.mod, target=self.target, relax_pipeline=backend)
            except Exception as err:  # noqa: BLE001 (any build failure: try the next one)
                self._give_up(backend, "build", err)
                continue
            self.backend, self.vm = backend, relax.VirtualMachine(executable, tvm.cpu())
            return
        self.backend, self.vm = None, None

    def _give_up(self, backend: str, stage: str, err: BaseException) -> None:
        line = first_line(err)
        self.fallbacks.append((backend, f"{stage} failed: {line}"))
        logger.warning("calibration: the %s %s failed (%s)", backend, stage, line)

    def __call__(self, args: list) -> list:
        """Run one batch; on a backend's first run, a failure moves on to the next one."""
        while self.vm is not None:
            try:
                result = self.vm["main"](*args)
            except Exception as err:  # noqa: BLE001
                if self.verified:
                    raise
                self._give_up(self.backend, "run", err)
                self._advance()
                continue
            self.verified = True
            return result
        raise _NoBackend(self.error())

    def error(self) -> str:
        tried = "; ".join(f"{b} {why}" for b, why in self.fallbacks)
        return f"the calibration module runs on no backend ({tried})"


@dataclass
class CalibrationRun:
    """What one calibration pass gave.

    Attributes:
        ranges: ``{range name: (min, max)}``, validated; names without a usable range are
            absent (see ``unusable``).
        unusable: ``{range name: why there is no range}`` (non-finite values observed, the
            collector returned none, the module ran on no backend).
        batches: calibration batches run.
        backend: the pipeline the calibration module ran with (``"onednn"``, or
            ``"default"`` after a oneDNN failure), None when it ran on none.
        fallbacks: ``[(backend, "build failed: <first line of the error>")]`` for every
            backend given up on, in order.
        collector: the collector's class name.
    """

    ranges: dict[str, Range]
    unusable: dict[str, str] = field(default_factory=dict)
    batches: int = 0
    backend: str | None = None
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    collector: str = ""


class ModelInputs:
    """Turns one calibration batch into the model's positional arguments, checking them.

    A symbolic dim of an input (``n`` of ``[n, 3, 224, 224]``) takes any size, the same
    wherever the symbol occurs. When every input has the same static leading dim (the
    model's ``batch``), a sample batch may also have another size there: :func:`regroup`
    rebatches the samples into the model's batch.
    """

    def __init__(self, main: relax.Function):
        self.names = [p.name for p in main.params]
        self.shapes = [ru.shape_dims(p) for p in main.params]
        self.dtypes = [ru.dtype(p) for p in main.params]
        leading = {shape[0] if shape else None for shape in self.shapes}
        only = leading.pop() if len(leading) == 1 else None
        self.batch: int | None = only if isinstance(only, int) else None

    def __call__(self, batch: Any, index: int) -> list[np.ndarray]:
        where = f"calibration batch {index}"
        if isinstance(batch, Mapping):
            unknown = sorted(str(k) for k in set(batch) - set(self.names))
            missing = [n for n in self.names if n not in batch]
            if unknown or missing:
                raise CalibrationError(
                    f"{where}: input names do not match the model: unknown {unknown}, "
                    f"missing {missing}; the model's inputs are {self.names}"
                )
            arrays = [batch[n] for n in self.names]
        elif isinstance(batch, (tuple, list)):
            if len(batch) < len(self.names):
                raise CalibrationError(
                    f"{where}: {len(batch)} array(s) for a model with {len(self.names)} "
                    f"inputs {self.names}"
                )
            arrays = list(batch[: len(self.names)])
        elif len(self.names) == 1:
            arrays = [batch]
        else:
            raise CalibrationError(
                f"{where}: a single array for a model with inputs {self.names}; "
                "pass a dict {name: array} or a tuple in input order"
            )
        arrays = [self._check(i, a, where) for i, a in enumerate(arrays)]
        self._check_dims(arrays, where)
        return arrays

    def _check(self, i: int, value: Any, where: str) -> np.ndarray:
        name, dtype = self.names[i], self.dtypes[i]
        try:
            arr = to_numpy(value)
        except TypeError as err:
            raise CalibrationError(f"{where}: input {name!r}: {err}") from None
        if str(arr.dtype) != dtype:
            raise CalibrationError(
                f"{where}: input {name!r} has dtype {arr.dtype}, the model takes {dtype} "
                f"(convert with .astype({dtype!r}))"
            )
        return np.ascontiguousarray(arr)

    def _check_dims(self, arrays: list[np.ndarray], where: str) -> None:
        """Ranks and static dims match the model; a symbol has one size in the batch; with
        regrouping, every input has the same batch size."""
        sizes: dict[str, int] = {}  # symbol -> the size it has in this batch
        free = self.batch is not None  # the leading dim may differ: samples are regrouped
        for name, shape, arr in zip(self.names, self.shapes, arrays):
            if shape is None:
                continue
            fits = arr.ndim == len(shape)
            for axis, (dim, size) in enumerate(zip(shape, arr.shape)):
                if ru.is_symbolic(dim):
                    fits = fits and size >= 1 and sizes.setdefault(str(dim), size) == size
                elif not (free and axis == 0):
                    fits = fits and dim == size
            if not fits:
                takes = "[" + ", ".join(map(str, shape)) + "]"
                raise CalibrationError(
                    f"{where}: input {name!r} has shape {list(arr.shape)}, the model takes "
                    f"{takes}" + (" (any batch size)" if free else "")
                )
        if self.batch is not None and len({a.shape[0] for a in arrays}) > 1:
            given = {n: a.shape[0] for n, a in zip(self.names, arrays)}
            raise CalibrationError(f"{where}: the inputs have different batch sizes {given}")


def regroup(samples: Iterator[list[np.ndarray]], batch: int) -> Iterator[list[np.ndarray]]:
    """Sample batches of any size (split along the leading dim) -> batches of ``batch``.

    A model built for a static batch (e.g. 16) calibrates on samples batched otherwise
    (e.g. one at a time); every sample runs once, and ranges do not depend on how the
    samples were batched. The last batch, when short, is filled up with the first samples
    again (it changes no min/max; a repeated sample weighs a little more in histograms).
    """
    pending: list[list[np.ndarray]] = []  # per input: arrays not yet run
    first: list[list[np.ndarray]] = []  # per input: the first samples, to fill the last
    have = seen = 0
    for arrays in samples:
        if not pending:
            pending, first = [[] for _ in arrays], [[] for _ in arrays]
        size = arrays[0].shape[0]
        for i, arr in enumerate(arrays):
            pending[i].append(arr)
            if seen < batch:
                first[i].append(arr[: batch - seen])
        have, seen = have + size, seen + size
        while have >= batch:
            joined = [np.concatenate(p) for p in pending]
            yield [np.ascontiguousarray(j[:batch]) for j in joined]
            pending = [[j[batch:]] for j in joined]
            have -= batch
    if have:
        fill = [np.concatenate(f) for f in first]
        while have < batch:
            take = min(batch - have, len(fill[0]))
            for rest, again in zip(pending, fill):
                rest.append(again[:take])
            have += take
        yield [np.ascontiguousarray(np.concatenate(p)) for p in pending]


class _TextProgress:
    """``calibrating: 3/10 batches`` rewritten in place on a terminal."""

    def __init__(self, total: int | None):
        self.total, self.count = total, 0

    def update(self, n: int = 1) -> None:
        self.count += n
        of = f"/{self.total}" if self.total else ""
        sys.stderr.write(f"\rcalibrating: {self.count}{of} batches")
        sys.stderr.flush()

    def close(self) -> None:
        if self.count:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int | None):
    if not sys.stderr.isatty():
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextProgress(total)
    return tqdm(total=total, desc="calibrating", unit="batch")


def _batches(calib_data: Iterable, num_calib_batches: int | None) -> tuple[Iterator, int | None]:
    try:
        total = len(calib_data)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if num_calib_batches is not None:
        total = num_calib_batches if total is None else min(total, num_calib_batches)
    try:
        batches = iter(calib_data)
    except TypeError:
        raise CalibrationError(
            f"calib_data must be an iterable of batches, got {type(calib_data).__name__}"
        ) from None
    return itertools.islice(batches, num_calib_batches), total


def _outputs(result, count: int) -> list:
    """The observed tensors: the last ``count`` fields of ``main``'s result tuple."""
    fields = list(result)
    return fields[len(fields) - count :]


def run_calibration(
    plan: QuantPlan,
    calib_data: Iterable,
    collector: CalibrationCollector,
    num_calib_batches: int | None = None,
    observe: Callable[[str, np.ndarray], None] | None = None,
) -> CalibrationRun:
    """Run ``calib_data`` through the float32 model; the collector's ranges and how it went.

    ``observe(name, array)``, when given, also sees every finite observed tensor (e.g.
    :class:`~.bias_correction.InputMeans`).

    Problems of the model are not errors: a tensor holding inf / NaN is not given to the
    collector and gets no range, nor does one the collector returns no range for; a module
    that builds on no backend gives no ranges at all (``CalibrationRun.unusable`` says why
    for each name; the quantizer keeps the layers that need them float32).

    Raises:
        CalibrationError: no batches, batches that do not match the model's inputs (names,
            shapes, dtypes), a batch that fails to run once a first one ran, or ranges from
            ``post_collect`` that are malformed (not a mapping, NaN, min > max...).
    """
    names = plan.range_names
    collector_name = type(collector).__name__
    mod = instrument(plan)
    inputs = ModelInputs(mod["main"])
    batches, total = _batches(calib_data, num_calib_batches)
    calibrator = _Calibrator(mod)

    def nowhere() -> CalibrationRun:
        why = calibrator.error()
        logger.warning("calibration: %s; every layer stays float32", why)
        return CalibrationRun(
            {}, dict.fromkeys(names, why), 0, None, calibrator.fallbacks, collector_name
        )

    if calibrator.vm is None:
        return nowhere()
    nonfinite: dict[str, str] = {}
    progress = _progress(total)
    count = 0  # calibration batches read

    def checked() -> Iterator[list[np.ndarray]]:
        nonlocal count
        for count, batch in enumerate(batches, start=1):
            yield inputs(batch, count - 1)
            progress.update(1)

    runs = checked() if inputs.batch is None else regroup(checked(), inputs.batch)
    try:
        for run, arrays in enumerate(runs):
            try:
                result = calibrator([tvm.runtime.tensor(a) for a in arrays])
            except _NoBackend:
                return nowhere()  # the first batch failed everywhere: nothing was collected
            except Exception as err:  # noqa: BLE001
                raise CalibrationError(
                    f"calibration batch {run} failed on the {calibrator.backend} "
                    f"pipeline: {first_line(err)}"
                ) from err
            for name, tensor in zip(names, _outputs(result, len(names))):
                if name in nonfinite:
                    continue
                arr = as_calib_array(tensor)
                why = _nonfinite(arr)
                if why:
                    nonfinite[name] = why
                    logger.warning("calibration: %s holds %s: no range for it", name, why)
                    continue
                collector.collect(name, plan.observed[name].op_name, arr)
                if observe is not None:
                    observe(name, arr)
    finally:
        progress.close()
    if count == 0:
        raise CalibrationError("calib_data is empty: no calibration batch to run")
    logger.info(
        "calibration: %d batch(es) on the %s pipeline, %d tensors observed",
        count,
        calibrator.backend,
        len(names),
    )
    returned = collector.post_collect()
    try:
        if not isinstance(returned, Mapping):
            validate_ranges(returned)  # raises: not a mapping
        present = {n: returned[n] for n in names if n in returned and n not in nonfinite}
        ranges = validate_ranges(present)
    except CalibrationError as err:
        raise CalibrationError(
            f"{collector_name}.post_collect() returned unusable ranges: {err}"
        ) from None
    unusable = {
        n: nonfinite.get(n, f"{collector_name}.post_collect() returned no range for it")
        for n in names
        if n not in ranges
    }
    return CalibrationRun(
        ranges, unusable, count, calibrator.backend, calibrator.fallbacks, collector_name
    )


def _nonfinite(arr: np.ndarray) -> str | None:
    """``"non-finite values (NaN and inf)"`` when the array holds any, else None."""
    if arr.dtype.kind != "f" or np.isfinite(arr).all():
        return None
    kinds = [k for k, f in (("NaN", np.isnan), ("inf", np.isinf)) if f(arr).any()]
    return f"non-finite values ({' and '.join(kinds)})"


def calibrate(
    plan: QuantPlan,
    calib_data: Iterable,
    collector: CalibrationCollector,
    num_calib_batches: int | None = None,
) -> dict[str, Range]:
    """Run ``calib_data`` through the float32 model and return the collector's ranges.

    Every name of ``plan.range_names`` gets a range, or this raises (the quantizer itself
    uses :func:`run_calibration`, which keeps going without the unusable ones).

    Raises:
        CalibrationError: as :func:`run_calibration`, and when some name has no usable range
            (the message names them and says why).
    """
    run = run_calibration(plan, calib_data, collector, num_calib_batches)
    if run.unusable:
        listed = "; ".join(f"{n}: {why}" for n, why in list(run.unusable.items())[:10])
        raise CalibrationError(f"no usable range for {len(run.unusable)} tensor(s): {listed}")
    return run.ranges
