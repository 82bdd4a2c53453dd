"""Keeping MetaSchedule's start-up cheap: tensor intrinsics and the builder's workers.

MetaSchedule's ``TuneContext`` and its default build function both run
``import tvm.s_tir.tensor_intrin``, which parses and registers the tensor intrinsics of
every backend TVM knows (CUDA, ROCm, Hexagon, Arm, RISC-V, x86). On a 2-core machine
that import alone took 70-150 s (CUDA's intrinsics are most of it), once in the tuning
process and again in every build worker, and ``LocalBuilder`` starts fresh workers for
every batch of candidates, so every build ran into its 30 s timeout and no candidate
was ever measured.

A CPU tuning session only needs the intrinsics of its CPU family (x86's VNNI/AVX-512
dot products, Arm's, RISC-V's), and a build worker needs none: it receives schedules
whose tensorization has already been applied. Hence:

- :func:`import_cpu_tensor_intrinsics` registers only the CPU family's intrinsics and
  makes ``tvm.s_tir.tensor_intrin`` an already-imported package, so TuneContext's
  import is free;
- :func:`build` is MetaSchedule's default build function without that import; it is
  pickled by value (its module is not imported by the workers);
- :class:`PooledBuilder` keeps its worker processes across batches (``LocalBuilder``
  starts new ones for every batch, each paying TVM's import, 10-15 s here) and recycles
  each worker after ``max_uses`` builds, which bounds the memory leak that made
  ``LocalBuilder`` restart them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder.local_builder import _worker_func
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

_INTRINSICS = "tvm.s_tir.tensor_intrin"


def _cpu_family(target: tvm.target.Target) -> str:
    triple = str(target.attrs.get("mtriple", "")) or platform.machine()
    triple = triple.lower()
    if triple.startswith(("aarch64", "arm")):
        return "arm_cpu"
    if triple.startswith("riscv"):
        return "riscv_cpu"
    return "x86"


def import_cpu_tensor_intrinsics(target: tvm.target.Target) -> None:
    """Register the tensor intrinsics of ``target``'s CPU family only (see module doc)."""
    family = _cpu_family(target)
    if _INTRINSICS not in sys.modules:
        spec = importlib.util.find_spec(_INTRINSICS)
        if spec is None:  # a TVM without tensor intrinsics: nothing to save
            return
        # The package object without running its __init__ (which imports every backend);
        # its submodules still import normally, on demand.
        sys.modules[_INTRINSICS] = importlib.util.module_from_spec(spec)
    importlib.import_module(f"{_INTRINSICS}.{family}")


def build(mod: tvm.IRModule, target: tvm.target.Target, _params: dict | None) -> tvm.runtime.Module:
    """MetaSchedule's ``default_build`` without importing every tensor intrinsic."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def thread_pool_initializer(num_threads: int):
    """A worker initializer that sizes TVM's thread pool (measurements use that many threads).

    Runner workers otherwise size it from ``TVM_NUM_THREADS``, whatever the target's
    ``num-cores`` says; candidates must be measured with the threads they were tuned for.
    """
    _pickle_by_value()

    def initialize() -> None:
        import tvm_ffi

        tvm_ffi.get_global_func("runtime.config_threadpool")(1, num_threads)

    return initialize


def _build_one(args: tuple) -> str:
    return _worker_func(*args)


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """MetaSchedule's local builder with worker processes that live across batches."""

    def __init__(
        self, max_workers: int | None = None, timeout_sec: float = 60.0, max_uses: int = 64
    ) -> None:
        super().__init__()
        _pickle_by_value()
        self.timeout_sec = timeout_sec
        self.pool = PopenPoolExecutor(
            max_workers=max_workers or len(os.sched_getaffinity(0)),
            timeout=timeout_sec,
            maximum_process_uses=max_uses,
        )

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        jobs = [(build, None, b.mod, b.target, None) for b in build_inputs]
        results = []
        for outcome in self.pool.map_with_error_catching(_build_one, jobs):
            if outcome.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                message = f"PooledBuilder: timeout, killed after {self.timeout_sec} seconds"
                results.append(ms.builder.BuilderResult(None, message))
            else:
                message = f"PooledBuilder: an exception occurred\n{outcome.value}"
                results.append(ms.builder.BuilderResult(None, message))
        return results

    def shutdown(self) -> None:
        self.pool.shutdown()


def _pickle_by_value() -> None:
    # Build workers then need neither tvm_onednn nor its runtime library.
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
