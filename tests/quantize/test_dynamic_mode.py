"""``calib_mode="none"``: dynamic (per-call) activation quantization runs in oneDNN.

Each matmul chain quantizes its own input on every call; the int8 table fuses it (scale
computation included) into ``onednn.qmatmul*`` with ``"src_scale": "dynamic"``. References:
TVM's own LLVM build of the same QDQ module (it computes the same scales in the graph):
outputs within 2e-3 of their range (one-step rounding flips of an input element at a .5
boundary move an output by about ``s * max|w|``); and float32 for the accuracy of MiniLM.
"""

from __future__ import annotations

import importlib
import functools

import numpy as np
import pytest

from tvm_onednn.byoc.partition import partition_for_onednn
from tvm_onednn.byoc.summary import summarize_partitioned
from tvm_onednn.quantize import quantize
from tvm_onednn.quantize.realize import realize
from tvm_onednn.testing import Runner, build

from .helpers import main_calls, regions
from .models import mlp, residual_block

ATOL = 2e-3  # of the output's range


def _dynamic(model, monkeypatch, scheme=None):
    if scheme is not None:
        quantize_pkg = importlib.import_module("tvm_onednn.quantize")
        monkeypatch.setattr(
            quantize_pkg, "realize", functools.partial(realize, activation_scheme=scheme)
        )
    return quantize(model.mod, calib_mode="none")


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL * np.abs(expected).max())


@pytest.mark.parametrize("scheme", [None, "symmetric", "asymmetric"])
def test_mlp_matmuls_run_as_dynamic_int8_in_onednn(scheme, monkeypatch):
    model = mlp()
    qmod = _dynamic(model, monkeypatch, scheme)
    summary = summarize_partitioned(partition_for_onednn(qmod))
    assert summary.composites == {
        "onednn.qmatmul_bias_relu": 1,
        "onednn.qmatmul_bias_add_gelu": 1,  # its residual (the relu output) added in float32
        "onednn.qmatmul": 1,
    }, summary.composites
    assert not summary.kept_ops, summary.kept_ops  # the scale computation is offloaded too
    (region,) = regions(qmod)
    dtypes = [n["quant"]["src_dtype"] for n in region.nodes]
    assert all(n["quant"]["src_scale"] == "dynamic" for n in region.nodes)
    assert all(n["dtype"] == "float32" for n in region.nodes)
    # the relu output is non-negative: u8 in both schemes; the signed ones follow the scheme
    expected = {None: "uint8", "asymmetric": "uint8", "symmetric": "int8"}[scheme]
    assert dtypes == [expected, "uint8", expected], dtypes
    fake_quant = Runner(build(qmod, "default"))
    onednn = Runner(build(qmod, "onednn"))
    for x in model.batches(3, seed=7):
        _close(onednn(x), fake_quant(x))
    big = model.batches(1, seed=8)[0] * 40  # a range no calibration saw: scales follow it
    _close(onednn(big), fake_quant(big))


def test_default_dynamic_scheme_is_asymmetric_u8():
    qmod = quantize(mlp().mod, calib_mode="none")
    q = main_calls(qmod, "quantize")
    assert [str(c.attrs.out_dtype) for c in q] == ["uint8"] * 3


def test_convs_stay_fake_quantized_in_tvm_with_the_same_math():
    model = residual_block()
    qmod = quantize(model.mod, calib_mode="none")
    summary = summarize_partitioned(partition_for_onednn(qmod))
    assert not any(name.startswith("onednn.q") for name in summary.composites)
    assert summary.kept_ops["relax.quantize"] == 2
    fake_quant = Runner(build(qmod, "default"))
    onednn = Runner(build(qmod, "onednn"))
    for x in model.batches(2, seed=3):
        _close(onednn(x), fake_quant(x))


# ---------------------------------------------------------------- all-MiniLM-L6-v2

minilm = importlib.import_module("tvm_onednn.models.minilm")
MIN_COSINE = 0.99  # sentence embedding vs float32, at (1, 16) and (2, 9)


@pytest.mark.skipif(bool(minilm.minilm_missing()), reason=str(minilm.minilm_missing()))
def test_minilm_dynamic_int8():
    from tvm_onednn import from_onnx
    from tvm_onednn.byoc.summary import offload_summary

    mod = from_onnx(minilm.minilm_onnx(batch=2, seq=8, dynamic=True))
    qmod = quantize(mod, calib_mode="none")
    summary = offload_summary(qmod)
    assert summary.regions == 1, str(summary)
    dynamic = {k: v for k, v in summary.composites.items() if k.startswith("onednn.qmatmul")}
    # q, k, v, attention output, FFN in and out per layer: 6 Linear layers x 6
    assert sum(dynamic.values()) == 36, str(summary)
    assert "relax.matmul" not in summary.kept_ops and "relax.quantize" not in summary.kept_ops
    fp32, int8 = Runner(build(mod)), Runner(build(qmod))
    for batch, seq in [(1, 16), (2, 9)]:
        feeds = minilm.minilm_inputs(batch, seq, seed=seq)
        args = [feeds[name] for name in minilm.MINILM_INPUTS]
        ref, emb = fp32(*args)[1], int8(*args)[1]
        cosine = np.sum(ref * emb, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(emb, axis=1))
        assert cosine.min() >= MIN_COSINE, (batch, seq, cosine)
