"""The ``"onednn"`` Relax pipeline: ``tvm.compile(mod, target, relax_pipeline="onednn")``.

Phases:
1. partition: fold constants and BatchNorm, canonicalize, match the oneDNN pattern
   table and merge neighbouring composites into regions (``partition_for_onednn``);
2. offload: ``RunCodegen`` turns each region into a oneDNN runtime module;
3. TVM: what stays is legalized, fused and lowered by TVM's CPU pipeline, with
   MetaSchedule records applied when a tuning database is in scope.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.s_tir import meta_schedule as ms

from .byoc.partition import partition_for_onednn
from .target import host_target_spec


def tvm_lowering_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """TVM's CPU lowering for the ops that stay with TVM (after offload)."""
    passes = [relax.transform.DecomposeOpsForInference()]
    passes += cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
    if ms.Database.current() is not None:
        passes.append(relax.transform.MetaScheduleApplyDatabase())
    return passes + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)


@relax.pipeline.register_pipeline("onednn")
def onednn_pipeline() -> tvm.transform.Pass:
    """Partition for oneDNN, offload, then lower the rest with TVM's CPU pipeline."""

    @tvm.transform.module_pass(opt_level=0, name="OneDNNPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True) or tvm.target.Target(host_target_spec())
        mod = partition_for_onednn(mod)
        mod = relax.transform.RunCodegen()(mod)
        with target:
            return tvm.transform.Sequential(tvm_lowering_passes(target))(mod)

    return _pipeline
