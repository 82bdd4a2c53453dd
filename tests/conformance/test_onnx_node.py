"""ONNX backend node test cases of the ops the plugin matches or rewrites (issue 10).

Cases are generated in memory by the installed ``onnx`` wheel; a case is selected when its
graph holds one of ``helpers.PLUGIN_OPS``. Each runs in two variants:

* as-is: every tensor is a graph input, as the ONNX case defines it;
* ``frozen``: the inputs that feed weight slots (conv/matmul weights and bias, BatchNorm /
  LayerNorm parameters, Clip bounds; ``helpers.WEIGHT_SLOTS``) become constants with the
  values of the first data set. Real models hold those as constants, and the plugin only
  offloads a conv, and quantize only quantizes a layer, whose weights are constants.

Tests, per case and variant:

* ``test_onednn_fp32``: if TVM's own import + ``"default"`` pipeline compiles and runs the
  case and matches ONNX's expected outputs (the case's ``rtol``/``atol``), the ``"onednn"``
  pipeline must too, with the same tolerance. Otherwise the case is skipped with the step
  TVM itself fails at (import / compile / run / numerics) as the reason.
* ``test_int8_naive`` (float32 cases with Conv/Gemm/MatMul that TVM supports):
  ``tvm_onednn.quantize(mod, [inputs], calib_mode="naive")`` must not raise, its
  ``"onednn"`` build must compile and run and give finite outputs of the right shapes.
  int8 vs fp32 closeness is not asserted on these tiny random cases; the cosine similarity
  to the expected outputs and the number of int8 layers are reported in the summary.

Failure messages start with ``[stage]``: import, onednn compile, onednn run, onednn
numerics, quantize, int8 build, int8 run, int8 output.
"""

import time

import numpy as np
import pytest

import tvm_onednn

from . import helpers as h

FP32_CASES = h.selected_case_names()
FROZEN_CASES = h.frozen_case_names()
INT8_CASES = h.quantizable_case_names()
INT8_FROZEN_CASES = [n for n in INT8_CASES if n in set(FROZEN_CASES)]


def _check_fp32(name: str, frozen: bool, test: str) -> None:
    case = h.node_cases()[name]
    ref = h.reference(name, frozen)
    if not ref.supported:
        h.skip(name, test, ref.reason)
    if ref.plugin_import_error:
        h.fail(name, test, "import", f"tvm_onednn.from_onnx: {ref.plugin_import_error}")
    start = time.perf_counter()
    try:
        executable = h.compile_module(ref.mod, "onednn")
    except Exception as err:  # noqa: BLE001
        h.fail(name, test, "onednn compile", err)
    for k, (inputs, expected) in enumerate(ref.data_sets):
        try:
            actual = h.run_executable(executable, inputs)
        except Exception as err:  # noqa: BLE001
            h.fail(name, test, "onednn run", err)
        try:
            h.compare(actual, expected, case.rtol, case.atol)
        except AssertionError as err:
            where = f"data set {k}: " if len(ref.data_sets) > 1 else ""
            h.fail(name, test, "onednn numerics", where + h.assertion_summary(err))
    h.TIMINGS[f"{test}[{name}]"] = time.perf_counter() - start
    h.OFFLOADED[f"{test}[{name}]"] = tvm_onednn.offload_summary(ref.mod).regions


def _check_int8(name: str, frozen: bool, test: str) -> None:
    ref = h.reference(name, frozen)
    if not ref.supported:
        h.skip(name, test, ref.reason)
    names = [p.name for p in ref.mod["main"].params]
    calib = [dict(zip(names, ref.data_sets[0][0]))]
    start = time.perf_counter()
    try:
        qmod = tvm_onednn.quantize(ref.mod, calib, calib_mode="naive")
    except Exception as err:  # noqa: BLE001
        h.fail(name, test, "quantize", err)
    try:
        executable = h.compile_module(qmod, "onednn")
    except Exception as err:  # noqa: BLE001
        h.fail(name, test, "int8 build", err)
    cosines = []
    for inputs, expected in ref.data_sets:
        try:
            actual = h.run_executable(executable, inputs)
        except Exception as err:  # noqa: BLE001
            h.fail(name, test, "int8 run", err)
        if len(actual) != len(expected):
            h.fail(name, test, "int8 output", f"{len(actual)} outputs, expected {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            if a.shape != np.shape(e):
                h.fail(name, test, "int8 output", f"output {i}: shape {a.shape}, expected {np.shape(e)}")
            finite = np.isfinite(e) if np.issubdtype(np.asarray(e).dtype, np.floating) else True
            bad = ~np.isfinite(a) & finite  # expected outputs may hold -inf (masked scores)
            if bad.any():
                h.fail(name, test, "int8 output", f"output {i}: {int(bad.sum())} non-finite values where the expected ones are finite")
            both = np.isfinite(a) & finite
            cosines.append(h.cosine(a[both], np.asarray(e)[both]))
    key = f"{test}[{name}]"
    h.COSINES[key] = min(cosines)
    h.INT8_LAYERS[key] = h.quantized_weight_count(qmod)
    h.TIMINGS[key] = time.perf_counter() - start


@pytest.mark.parametrize("name", FP32_CASES)
def test_onednn_fp32(name):
    _check_fp32(name, False, "test_onednn_fp32")


@pytest.mark.parametrize("name", FROZEN_CASES)
def test_onednn_fp32_frozen(name):
    _check_fp32(name, True, "test_onednn_fp32_frozen")


@pytest.mark.parametrize("name", INT8_CASES)
def test_int8_naive(name):
    _check_int8(name, False, "test_int8_naive")


@pytest.mark.parametrize("name", INT8_FROZEN_CASES)
def test_int8_naive_frozen(name):
    _check_int8(name, True, "test_int8_naive_frozen")
