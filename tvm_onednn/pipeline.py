"""The ``"onednn"`` Relax pipeline: ``tvm.compile(mod, target, relax_pipeline="onednn")``.

Phases:
1. partition: fold constants and BatchNorm, canonicalize, match the oneDNN pattern
   table and merge neighbouring composites into regions (``partition_for_onednn``);
2. offload: ``RunCodegen`` turns each region into a oneDNN runtime module;
3. TVM: what stays is legalized and fused (phases 1-3 are :func:`lower_for_tvm`, which
   is also the module that :func:`tvm_onednn.tune` tunes), MetaSchedule records are
   applied when a tuning database is in scope, and the result is lowered by TVM's CPU
   pipeline.

Tuning records only match when the tuned PrimFuncs are structurally identical to the
ones compiled, so tuning and compiling must share :func:`lower_for_tvm` exactly.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.s_tir import meta_schedule as ms

from .byoc.partition import partition_for_onednn
from .target import host_target_spec


def legalize_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """TVM's CPU legalization and fusion of the ops that stay with TVM (after offload)."""
    passes = [relax.transform.DecomposeOpsForInference()]
    return passes + cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)


def lower_for_tvm(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Partition and offload to oneDNN, then legalize and fuse what stays with TVM.

    The result holds the fused TIR PrimFuncs that TVM compiles (the MetaSchedule
    workloads) and ``call_dps_packed`` calls of the oneDNN regions. ``mod`` is not
    modified.
    """
    mod = partition_for_onednn(mod)
    mod = relax.transform.RunCodegen()(mod)
    with target:
        return tvm.transform.Sequential(legalize_passes(target), name="LegalizeForTVM")(mod)


def finish_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """After :func:`lower_for_tvm`: apply tuning records (if a database is in scope), lower."""
    passes = []
    if ms.Database.current() is not None:
        passes.append(relax.transform.MetaScheduleApplyDatabase())
    return passes + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)


@relax.pipeline.register_pipeline("onednn")
def onednn_pipeline() -> tvm.transform.Pass:
    """Partition for oneDNN, offload, then lower the rest with TVM's CPU pipeline."""

    @tvm.transform.module_pass(opt_level=0, name="OneDNNPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True) or tvm.target.Target(host_target_spec())
        mod = lower_for_tvm(mod, target)
        with target:
            return tvm.transform.Sequential(finish_passes(target))(mod)

    return _pipeline
