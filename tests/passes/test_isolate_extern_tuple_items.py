"""IsolateExternTupleItems: items of a oneDNN region's output tuple stay out of fused kernels.

TVM 0.27's FuseOps splits the tuple parameters of a fused function by stale positions when
the function reads items of two or more tuples; the visiting order is a pointer order, so
the build fails in some runs only (FuseTIR ``buffer_idx == buffers.size()``). The tests
build a module of that shape: two external calls returning tuples, one elementwise chain
reading two items of each.
"""

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_onednn.passes import IsolateExternTupleItems
from tvm_onednn.pipeline import legalize_passes
from tvm_onednn.testing import target


@tvm_ffi.register_global_func("tests.three_outputs", override=True)
def _three_outputs(x, out0, out1, out2):
    data = x.numpy()
    out0.copyfrom(data)
    out1.copyfrom(data[:1] * 10)
    out2.copyfrom(data + 1)


@I.ir_module
class TwoTuples:
    @R.function
    def main(x: R.Tensor((2, 3), "float32")):
        with R.dataflow():
            t = R.call_dps_packed(
                "tests.three_outputs", (x,),
                out_ty=[R.Tensor((2, 3), "float32"), R.Tensor((1, 3), "float32"),
                        R.Tensor((2, 3), "float32")],
            )  # fmt: skip
            u = R.call_dps_packed(
                "tests.three_outputs", (x,),
                out_ty=[R.Tensor((2, 3), "float32"), R.Tensor((1, 3), "float32"),
                        R.Tensor((2, 3), "float32")],
            )  # fmt: skip
            a = t[2]
            b = t[1]
            c = u[2]
            d = u[0]
            e = R.add(R.add(R.multiply(a, R.const(2.0)), b), R.add(c, d))
            y = R.exp(e)
            R.output(y)
        return y


def _expected(x):
    return np.exp((x + 1) * 2 + x[:1] * 10 + (x + 1) + x)


def _fuse(mod, passes):
    """Run ``passes`` up to and including FuseOps."""
    with target():
        for p in passes:
            mod = p(mod)
            if p.info.name == "FuseOps":
                return mod
    raise AssertionError("no FuseOps in the pass list")


def _main_binding_names(mod) -> set[str]:
    return {b.var.name for block in mod["main"].body.blocks for b in block.bindings}


def test_tvm_fuses_item_reads_without_the_pass():
    """The control: TVM's own passes move the item reads into the fused kernel."""
    fused = _fuse(TwoTuples, cpu.legalize_passes(target()))
    assert not {"a", "b", "c", "d"} & _main_binding_names(fused)


def test_item_reads_stay_in_main():
    fused = _fuse(TwoTuples, legalize_passes(target()))
    assert {"a", "b", "c", "d"} <= _main_binding_names(fused)
    kernels = [f for f in fused.functions.values() if isinstance(f, relax.Function)
               and f.attrs and f.attrs.get("Primitive")]  # fmt: skip
    assert kernels
    for func in kernels:
        assert all(isinstance(p.ty, relax.TensorType) for p in func.params)


def test_pass_keeps_the_module_well_formed_and_leaves_other_tuples_alone():
    mod = IsolateExternTupleItems()(TwoTuples)
    relax.analysis.well_formed(mod)
    assert IsolateExternTupleItems()(mod).script() == mod.script()


@pytest.mark.parametrize("attempt", range(20))
def test_the_onednn_pipeline_builds_every_time(attempt):
    ex = tvm.compile(TwoTuples, target(), relax_pipeline="onednn")
    x = np.arange(6, dtype="float32").reshape(2, 3)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(out, _expected(x), rtol=1e-5)
