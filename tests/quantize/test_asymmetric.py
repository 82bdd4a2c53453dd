"""Asymmetric activations (issue 13): signed ranges as u8 with a zero point, end to end.

``realize(activation_scheme="asymmetric")`` is internal for now (``quantize`` keeps symmetric
activations), so these tests route ``quantize`` through it. Each quantized model is checked
three ways against TVM's own LLVM build of the same QDQ module (which implements zero points):
a numpy executor of the region JSON and the oneDNN build, both with ``assert_int8_close``
(equal but for rare one-step rounding flips, at most 2 steps of the output's int8 range on 5 %
of the outputs).
"""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pytest

from tvm_onednn.byoc.partition import partition_for_onednn
from tvm_onednn.byoc.summary import summarize_partitioned
from tvm_onednn.quantize import quantize
from tvm_onednn.quantize.realize import realize, tensor_quant_params
from tvm_onednn.testing import Runner, build

from .helpers import assert_int8_close, const, main_calls, regions, run_int8_region
from .models import conv_pool_net, mlp, residual_block, small_cnn


def _quantize(model, scheme: str, monkeypatch):
    quantize_pkg = importlib.import_module("tvm_onednn.quantize")  # the package, not the function
    monkeypatch.setattr(
        quantize_pkg, "realize", functools.partial(realize, activation_scheme=scheme)
    )
    return quantize(model.mod, model.batches(4), calib_mode="naive")  # min/max ranges


@pytest.mark.parametrize("make", [mlp, residual_block, conv_pool_net, small_cnn])
def test_asymmetric_int8_matches_tvms_qdq_build(make, monkeypatch):
    model = make()
    qmod = _quantize(model, "asymmetric", monkeypatch)
    zps = [(str(q.attrs.out_dtype), int(const(q.args[2]))) for q in main_calls(qmod, "quantize")]
    assert any(dtype == "uint8" and zp != 0 for dtype, zp in zps), zps  # a signed range
    assert all(dtype == "uint8" for dtype, _ in zps), zps  # no s8 activation is left
    fake_quant = Runner(build(qmod, "default"))
    (region,) = regions(qmod)
    assert any(n["quant"].get("src_zero_point", 0) != 0 for n in region.nodes if "quant" in n)
    int8 = Runner(build(qmod, "onednn"))
    for x in model.batches(2, seed=5):
        expected = fake_quant(x)
        (json_numpy,) = run_int8_region(region, [x])
        assert_int8_close(json_numpy, expected)
        assert_int8_close(int8(x), expected)


@pytest.mark.parametrize("make", [mlp, residual_block, small_cnn])
def test_asymmetric_fuses_the_same_composites(make, monkeypatch):
    model = make()
    sym = summarize_partitioned(partition_for_onednn(_quantize(model, "symmetric", monkeypatch)))
    asym = summarize_partitioned(partition_for_onednn(_quantize(model, "asymmetric", monkeypatch)))
    assert asym.composites == sym.composites
    assert any(name.startswith("onednn.q") for name in asym.composites)


def test_tensor_quant_params_schemes():
    class Plan:  # the two fields tensor_quant_params reads
        observed = {"signed": type("O", (), {"nonnegative": False})(),
                    "relu": type("O", (), {"nonnegative": True})()}

    ranges = {"signed": (-1.0, 3.0), "relu": (0.0, 2.55)}
    sym = tensor_quant_params(Plan, ranges)
    asym = tensor_quant_params(Plan, ranges, activation_scheme="asymmetric")
    assert (sym["signed"].dtype, sym["signed"].zero_point) == ("int8", 0)
    assert asym["signed"].dtype == "uint8"
    assert asym["signed"].scale == pytest.approx(4.0 / 255)
    assert asym["signed"].zero_point == round(1.0 / (4.0 / 255))  # real 0 is exact: 64
    assert asym["relu"] == sym["relu"]  # non-negative ranges keep zero point 0
    forced = tensor_quant_params(Plan, ranges, "int8", activation_scheme="asymmetric")
    assert (forced["signed"].dtype, forced["signed"].zero_point) == ("int8", 0)
    with pytest.raises(ValueError, match="activation_scheme must be one of"):
        tensor_quant_params(Plan, ranges, activation_scheme="affine")


def test_asymmetric_is_not_less_accurate_on_the_mlp(monkeypatch):
    """Signed mlp activations: u8 with a zero point has twice the levels of s8 over the
    range. Error vs float32 (max abs over 8 batches) must not grow."""
    model = mlp()
    float_run = Runner(build(model.mod, "default"))
    errors = {}
    for scheme in ("symmetric", "asymmetric"):
        int8 = Runner(build(_quantize(model, scheme, monkeypatch), "onednn"))
        errors[scheme] = max(
            float(np.abs(int8(x) - float_run(x)).max()) for x in model.batches(8, seed=9)
        )
    assert errors["asymmetric"] <= errors["symmetric"] * 1.05, errors
