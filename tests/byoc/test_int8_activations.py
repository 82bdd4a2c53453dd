"""Every activation of the chain table works in the int8 table too (multi-op ones included)."""

import numpy as np
import pytest

import tvm_onednn
from tvm_onednn.byoc.chains import ACTIVATIONS
from tvm_onednn.testing import Runner, build

from ..quantize.helpers import assert_int8_close
from .builders import conv2d_module, matmul_module

BUILDERS = {"conv2d": conv2d_module, "matmul": matmul_module}


@pytest.mark.parametrize("base", sorted(BUILDERS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_int8_chain_with_activation(base, activation):
    mod, inputs = BUILDERS[base](activation=activation)
    rng = np.random.default_rng(5)
    calib = [[rng.standard_normal(x.shape).astype("float32") for x in inputs] for _ in range(2)]
    qmod = tvm_onednn.quantize(mod, calib, calib_mode="naive")
    summary = tvm_onednn.offload_summary(qmod)
    expected_composites = {"onednn.quantize": 1, f"onednn.q{base}_bias_{activation}": 1}
    assert summary.composites == expected_composites, summary
    # The int8 oneDNN primitive computes what TVM's own build of the QDQ module computes.
    expected = Runner(build(qmod, "default"))(*inputs)
    actual = Runner(build(qmod))(*inputs)
    assert_int8_close(actual, expected)
