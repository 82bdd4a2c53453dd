"""EnsureHostFunction: fully offloaded models get an LLVM host library, not a C source stub.

Without it, a model whose every op runs in oneDNN was linked under an empty C source module:
each ``relax.VirtualMachine`` then exported and ``dlopen``ed a shared library (a C compiler
at run time) that was never freed, with the oneDNN module's weights and buffers in it
(MobileNetV2: +51 MiB per built-and-run executable).
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import tvm
from tvm import relax, tirx
from tvm.script import relax as R

from tvm_onednn.interface.run import region_stats
from tvm_onednn.passes import HOST_FUNCTION, EnsureHostFunction
from tvm_onednn.testing import Runner, build

K = N = 1024  # a 4 MiB weight
WEIGHT = np.random.default_rng(0).normal(size=(K, N)).astype("float32") / 32


def _dense_relu(tvm_op: bool = False) -> tvm.IRModule:
    """``relu(x @ WEIGHT)`` (oneDNN takes it all), optionally followed by a cumsum TVM keeps."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((4, K), "float32"))
    w = relax.const(WEIGHT)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.matmul(x, w)))
            if tvm_op:
                y = bb.emit(relax.op.cumsum(y, axis=1))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _kinds(module) -> list[str]:
    kinds = [module.kind]
    for imported in module.imports:
        kinds += _kinds(imported)
    return kinds


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_fully_offloaded_model_links_an_llvm_host_and_runs_without_export():
    mod = _dense_relu()
    executable = build(mod)
    kinds = _kinds(executable.mod)
    assert "onednn_json" in kinds and "llvm" in kinds and "c" not in kinds, kinds
    assert executable.jit() is executable.mod  # runnable as is: nothing exported or loaded
    x = np.random.default_rng(1).normal(size=(4, K)).astype("float32")
    expected = np.maximum(x @ WEIGHT, 0)
    np.testing.assert_allclose(Runner(executable)(x), expected, rtol=1e-4, atol=1e-4)
    # The VM ran the executable's own region module (before, a dlopened copy of it).
    (stats,) = region_stats(executable.mod)
    assert stats["initialized"] and stats["calls"] == 1, stats


def test_module_with_primfuncs_is_unchanged():
    lowered = relax.get_pipeline("onednn")(_dense_relu(tvm_op=True))
    assert HOST_FUNCTION not in [gv.name_hint for gv in lowered.get_global_vars()]
    assert EnsureHostFunction(lowered).same_as(lowered)


def test_adds_one_empty_primfunc_and_leaves_the_input_alone():
    mod = _dense_relu()
    out = EnsureHostFunction(mod)
    assert HOST_FUNCTION not in [gv.name_hint for gv in mod.get_global_vars()]
    func = out[HOST_FUNCTION]
    assert isinstance(func, tirx.PrimFunc) and len(func.params) == 0
    assert out["main"].same_as(mod["main"])


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_built_and_run_executables_are_freed():
    """Six executables built, run and dropped: memory stays flat (it grew by the weights,
    their packed copy and the buffers, ~3x 4 MiB, per executable before)."""
    mod = _dense_relu()
    x = np.ones((4, K), "float32")

    def build_run_drop() -> None:
        executable = build(mod)
        Runner(executable)(x)
        del executable
        gc.collect()

    build_run_drop()
    build_run_drop()
    before = _rss_mib()
    for _ in range(6):
        build_run_drop()
    assert _rss_mib() - before < 24, "executables are not freed"
