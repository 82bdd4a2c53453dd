"""The ``"onednn"`` Relax pipeline: ``tvm.compile(mod, target, relax_pipeline="onednn")``.

Phases (each can be watched, see :class:`PipelineTrace`):
1. ``partitioned``: fold constants and BatchNorm, canonicalize, match the oneDNN pattern
   tables and merge neighbouring composites into regions (:class:`PartitionForOneDNN`);
2. ``offloaded``: ``RunCodegen`` turns each region into a oneDNN runtime module;
3. ``legalized``: what stays with TVM is legalized and fused (phases 1-3 are
   :func:`lower_for_tvm`, which is also the module that :func:`tvm_onednn.tune` tunes);
4. ``tuned``: MetaSchedule records are applied when a tuning database is in scope;
5. ``lowered``: TVM's CPU pipeline lowers the rest to a VM program (plus an empty host
   PrimFunc when nothing is left for TVM: :class:`~tvm_onednn.passes.EnsureHostFunction`).

Tuning records only match when the tuned PrimFuncs are structurally identical to the
ones compiled, so tuning and compiling must share :func:`lower_for_tvm` exactly.

``relax.get_pipeline("onednn", trace=PipelineTrace(dump_dir))`` (or
:func:`tvm_onednn.compile_model`'s ``trace``) keeps the module after each phase and
writes it to ``dump_dir``: the model is partitioned once per compile, and what a
caller reports (offload summary, tuned kernels) is read from the same modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.s_tir import meta_schedule as ms

from .byoc.partition import PartitionForOneDNN
from .passes import EnsureHostFunction, IsolateExternTupleItems
from .target import host_target_spec

PHASES = ("partitioned", "offloaded", "legalized", "tuned", "lowered")

#: Called with (phase name, module after that phase).
Trace = Callable[[str, tvm.IRModule], None]


class PipelineTrace:
    """Keeps the module after each phase; with ``dump_dir``, writes each there as
    ``<n>_<phase>.py`` (TVMScript), numbered in the order the phases come.

    A caller may add its own phases before the pipeline's (``trace("imported", mod)``).
    """

    def __init__(self, dump_dir: str | os.PathLike | None = None):
        self.dump_dir = Path(dump_dir) if dump_dir is not None else None
        self.modules: dict[str, tvm.IRModule] = {}
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, phase: str, mod: tvm.IRModule) -> None:
        number = len(self.modules)
        self.modules[phase] = mod
        if self.dump_dir is not None:
            (self.dump_dir / f"{number:02d}_{phase}.py").write_text(mod.script())

    def write(self, name: str, text: str) -> None:
        """Write another file (e.g. a summary) beside the dumped phases."""
        if self.dump_dir is not None:
            (self.dump_dir / name).write_text(text)


def _no_trace(phase: str, mod: tvm.IRModule) -> None:
    del phase, mod


def legalize_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """TVM's CPU legalization and fusion of the ops that stay with TVM (after offload).

    :class:`IsolateExternTupleItems` runs right before ``FuseOps``: it keeps the outputs of
    multi-output oneDNN regions out of fused kernels, where TVM 0.27 mis-binds them in
    some runs.
    """
    passes = [relax.transform.DecomposeOpsForInference(), *cpu.library_dispatch_passes(target)]
    for legalize in cpu.legalize_passes(target):
        if legalize.info.name == "FuseOps":
            passes.append(IsolateExternTupleItems())
        passes.append(legalize)
    return passes


def lower_for_tvm(
    mod: tvm.IRModule, target: tvm.target.Target, trace: Trace = _no_trace
) -> tvm.IRModule:
    """Partition and offload to oneDNN, then legalize and fuse what stays with TVM.

    The result holds the fused TIR PrimFuncs that TVM compiles (the MetaSchedule
    workloads) and ``call_dps_packed`` calls of the oneDNN regions. ``mod`` is not
    modified.
    """
    mod = PartitionForOneDNN()(mod)
    trace("partitioned", mod)
    mod = relax.transform.RunCodegen()(mod)
    trace("offloaded", mod)
    with target:
        mod = tvm.transform.Sequential(legalize_passes(target), name="LegalizeForTVM")(mod)
    trace("legalized", mod)
    return mod


def finish_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """After :func:`lower_for_tvm`: apply tuning records (if a database is in scope), lower."""
    return apply_records_passes() + lower_passes(target)


def apply_records_passes() -> list[tvm.transform.Pass]:
    """MetaSchedule's records, when a tuning database is in scope."""
    if ms.Database.current() is None:
        return []
    return [relax.transform.MetaScheduleApplyDatabase()]


def lower_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    return cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)


@relax.pipeline.register_pipeline("onednn")
def onednn_pipeline(trace: Trace | None = None) -> tvm.transform.Pass:
    """Partition for oneDNN, offload, then lower the rest with TVM's CPU pipeline.

    ``trace`` (e.g. a :class:`PipelineTrace`) is called with the module after each phase.
    """
    trace = trace or _no_trace

    @tvm.transform.module_pass(opt_level=0, name="OneDNNPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True) or tvm.target.Target(host_target_spec())
        mod = lower_for_tvm(mod, target, trace)
        with target:
            mod = tvm.transform.Sequential(apply_records_passes())(mod)
            trace("tuned", mod)
            mod = tvm.transform.Sequential(lower_passes(target))(mod)
        mod = EnsureHostFunction(mod)
        trace("lowered", mod)
        return mod

    return _pipeline
