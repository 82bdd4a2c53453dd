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
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
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

__all__ = ["calibrate", "instrument"]

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


def _build(mod: tvm.IRModule) -> relax.VirtualMachine:
    target = tvm.target.Target(host_target_spec())
    try:
        executable = tvm.compile(mod, target=target, relax_pipeline="onednn")
    except Exception as err:  # noqa: BLE001 (any build failure: use TVM's kernels instead)
        logger.warning("calibration: the oneDNN build failed (%s); using TVM's pipeline", err)
        executable = tvm.compile(mod, target=target, relax_pipeline="default")
    return relax.VirtualMachine(executable, tvm.cpu())


class _Inputs:
    """Turns one calibration batch into the model's positional arguments, checking them."""

    def __init__(self, main: relax.Function):
        self.names = [p.name for p in main.params]
        self.shapes = [ru.static_shape(p) for p in main.params]
        self.dtypes = [ru.dtype(p) for p in main.params]

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
        return [self._check(i, a, where) for i, a in enumerate(arrays)]

    def _check(self, i: int, value: Any, where: str) -> np.ndarray:
        name, shape, dtype = self.names[i], self.shapes[i], self.dtypes[i]
        try:
            arr = to_numpy(value)
        except TypeError as err:
            raise CalibrationError(f"{where}: input {name!r}: {err}") from None
        if shape is not None and list(arr.shape) != shape:
            raise CalibrationError(
                f"{where}: input {name!r} has shape {list(arr.shape)}, the model takes {shape}"
            )
        if str(arr.dtype) != dtype:
            raise CalibrationError(
                f"{where}: input {name!r} has dtype {arr.dtype}, the model takes {dtype} "
                f"(convert with .astype({dtype!r}))"
            )
        return np.ascontiguousarray(arr)


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


def calibrate(
    plan: QuantPlan,
    calib_data: Iterable,
    collector: CalibrationCollector,
    num_calib_batches: int | None = None,
) -> dict[str, Range]:
    """Run ``calib_data`` through the float32 model and return the collector's ranges.

    Raises:
        CalibrationError: no batches, batches that do not match the model's inputs (names,
            shapes, dtypes), or ranges from ``post_collect`` that are unusable (NaN, min > max,
            a needed layer missing).
    """
    names = plan.range_names
    mod = instrument(plan)
    inputs = _Inputs(mod["main"])
    vm = _build(mod)
    batches, total = _batches(calib_data, num_calib_batches)
    progress = _progress(total)
    count = 0
    try:
        for count, batch in enumerate(batches, start=1):
            args = [tvm.runtime.tensor(a) for a in inputs(batch, count - 1)]
            observed = _outputs(vm["main"](*args), len(names))
            for name, tensor in zip(names, observed):
                collector.collect(name, plan.observed[name].op_name, as_calib_array(tensor))
            progress.update(1)
    finally:
        progress.close()
    if count == 0:
        raise CalibrationError("calib_data is empty: no calibration batch to run")
    logger.info("calibration: %d batch(es), %d tensors observed", count, len(names))
    ranges = collector.post_collect()
    try:
        return validate_ranges(ranges, expected_layers=names)
    except CalibrationError as err:
        raise CalibrationError(
            f"{type(collector).__name__}.post_collect() returned unusable ranges: {err}"
        ) from None
