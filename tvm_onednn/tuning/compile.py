"""``compile_model``: the ``"onednn"`` pipeline with tuning records in scope."""

from __future__ import annotations

import os
from collections.abc import Iterable

import tvm
from tvm import relax

from ..pipeline import Trace, lower_for_tvm
from ..target import parse_target
from .database import merge_databases
from .tune import tuning_target


def compile_model(
    mod: tvm.IRModule,
    target: tvm.target.Target | dict | str | None = None,
    tuning_records: Iterable[str | os.PathLike] = (),
    trace: Trace | None = None,
) -> relax.VMExecutable:
    """``tvm.compile(mod, target, relax_pipeline="onednn")`` applying tuning records.

    ``tuning_records`` are work directories written by :func:`tvm_onednn.tune`; with
    several, each TVM kernel gets the best record found in any of them (MetaSchedule's
    ``UnionDatabase``). Kernels without a record compile untuned. Records only match the
    kernels of a model lowered the same way, which the pipeline guarantees
    (:func:`tvm_onednn.pipeline.lower_for_tvm`); the target's ``num-cores`` is set as for
    tuning. ``trace`` (a :class:`tvm_onednn.pipeline.PipelineTrace`) sees the module after
    each pipeline phase.
    """
    pipeline = relax.get_pipeline("onednn", trace=trace)
    database = merge_databases(tuning_records)
    if database is None:
        target = target if isinstance(target, tvm.target.Target) else parse_target(target)
        return tvm.compile(mod, target, relax_pipeline=pipeline)
    target = tuning_target(target)
    with target, database:
        return tvm.compile(mod, target, relax_pipeline=pipeline)


def tuned_kernels(
    mod: tvm.IRModule,
    target: tvm.target.Target | dict | str | None = None,
    tuning_records: Iterable[str | os.PathLike] = (),
) -> tuple[list[str], list[str]]:
    """``(kernels with a record, kernels without)``: the TVM kernels of ``mod`` by name.

    What :func:`compile_model` will apply, found the same way (lower, then
    ``MetaScheduleApplyDatabase``): a kernel that gets a record is marked scheduled.
    """
    target = tuning_target(target)
    lowered = lower_for_tvm(mod, target)
    database = merge_databases(tuning_records)
    if database is not None:
        with target, database:
            lowered = relax.transform.MetaScheduleApplyDatabase()(lowered)
    return scheduled_kernels(lowered)


def scheduled_kernels(mod: tvm.IRModule) -> tuple[list[str], list[str]]:
    """``(kernels with a tuning record applied, kernels without)`` of a lowered module."""
    tuned, untuned = [], []
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            scheduled = bool(func.attrs and func.attrs.get("tirx.is_scheduled", False))
            (tuned if scheduled else untuned).append(gv.name_hint)
    return sorted(tuned), sorted(untuned)
