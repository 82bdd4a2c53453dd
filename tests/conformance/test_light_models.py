"""Whole-model graphs shipped in the onnx wheel (``onnx/backend/test/data/light``), issue 10.

Each ``light_<name>.onnx`` keeps a model-zoo network's exact graph with constant weights
(``ConstantOfShape``), plus the output stored for the input ONNX's backend runner feeds
(``arange(size).reshape(shape) / size``; ``tvm_onednn.models.onnx_zoo.light_model``).

* ``test_light_fp32``: the ``"onednn"`` build must reproduce the stored output within a
  max relative error of 1e-4 (relative to ``max|expected|``).
* ``test_light_int8``: ``quantize(calib_mode="naive")`` with 3 calibration batches drawn
  from another distribution than the evaluation input (seeded ``uniform[0, 1)`` noise,
  the evaluation input's range), compiled with ``"onednn"``, must run and give finite
  outputs of the stored shape, with cosine similarity > 0.9 to the stored fp32 output.

What the stored outputs can check: the constant weights make every class identical, so
8 of the 9 stored outputs are a uniform softmax (all 0.001) and densenet121's is one
constant (0.461). They check that the graph runs end to end with the right shapes and,
for densenet121, the magnitude; they cannot check per-class numerics. The cosine of
int8 against such an output is ~1 for any int8 build that is finite and positive, so
the test also reports (and bounds) the relative error of the pre-softmax tensor (the
logits: added as a second graph output) of int8 against the fp32 oneDNN build, which
does depend on every quantized layer's scales.

0.9 for the cosine is a loose sanity bound: a correct int8 build of a classifier stays
above 0.99 (measured: 1.0000 on all nine), while a wrong scale, a saturating kernel or
garbage memory gives outputs far from it or non-finite ones.
"""

import functools
import time

import numpy as np
import onnx
import pytest

import tvm_onednn
from tvm_onednn.models.onnx_zoo import light_model, light_models_dir

from . import helpers as h

MODELS = sorted(p.stem.removeprefix("light_") for p in light_models_dir().glob("light_*.onnx"))
FP32_MAX_REL_ERR = 1e-4
INT8_MIN_COSINE = 0.9
INT8_MAX_LOGIT_REL_ERR = 0.05  # int8 vs fp32 pre-softmax tensor (see module docstring)
# shufflenet's constant weights leave 520 of its 544 final channels at ~0.019 while 24
# carry the stem's real BatchNorm up to ~15 in the same residual tensors: per-tensor int8
# rounds the small ones to 0 at every residual add (13 of them), and the constant FC sums
# them all, so the logit loses ~55 %. Inherent to per-tensor int8 on this graph, not a
# bug: TVM's own build of the same QDQ module gives the identical output, onnxruntime's
# quantize_static (per-channel s8 weights, u8 MinMax) loses 0.551, excluding the 13
# residual-add layers brings it to 0.038 (tests/quantize/test_shufflenet_unit.py checks
# the shuffle unit's int8 kernels against the QDQ reference).
INT8_LOGIT_REL_ERR_BY_MODEL = {"shufflenet": 0.6}
CALIB_BATCHES, CALIB_SEED = 3, 1

FP32_LOGITS: dict[str, np.ndarray] = {}  # model -> pre-softmax tensor of the fp32 build


def _with_logits(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """The model with the input of its final Softmax as a second output (if it has one)."""
    last = model.graph.node[-1]
    if last.op_type != "Softmax" or last.output[0] != model.graph.output[0].name:
        return model, False
    out = onnx.ModelProto()
    out.CopyFrom(model)
    logits = out.graph.output.add()
    logits.CopyFrom(model.graph.output[0])  # Softmax keeps its input's type and shape
    logits.name = last.input[0]
    return out, True


@functools.cache
def _load(name: str):
    """(zoo, relax module or None, skip reason, has_logits), imported once per process."""
    zoo = light_model(name)
    model, has_logits = _with_logits(zoo.model)
    try:
        mod = tvm_onednn.from_onnx(model)
    except Exception as err:  # noqa: BLE001
        try:
            from tvm.relax.frontend.onnx import from_onnx

            from_onnx(model)
        except Exception as tvm_err:  # noqa: BLE001
            return zoo, None, f"TVM import fails: {h.first_line(tvm_err)}", has_logits
        return zoo, None, f"[import] tvm_onednn.from_onnx: {h.first_line(err)}", has_logits
    return zoo, mod, "", has_logits


def _rel_err(actual, expected) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


@pytest.mark.parametrize("name", MODELS)
def test_light_fp32(name):
    test = "test_light_fp32"
    zoo, mod, reason, has_logits = _load(name)
    if mod is None:
        if reason.startswith("TVM"):
            h.skip(name, test, reason)
        h.fail(name, test, "import", reason)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        executable = h.compile_module(mod, "onednn")
    except Exception as err:  # noqa: BLE001
        h.fail(name, test, "onednn compile", err)
    try:
        outputs = h.run_executable(executable, list(zoo.inputs.values()))
    except Exception as err:  # noqa: BLE001
        h.fail(name, test, "onednn run", err)
    h.TIMINGS[f"{test}[{name}]"] = time.perf_counter() - start
    h.CPU_TIMES[f"{test}[{name}]"] = time.process_time() - cpu
    actual, expected = outputs[0], zoo.expected[0]
    if actual.shape != expected.shape:
        h.fail(name, test, "onednn numerics", f"shape {actual.shape}, expected {expected.shape}")
    err = _rel_err(actual, expected)
    print(f"{name}: fp32 max relative error {err:.2e}")
    if not err <= FP32_MAX_REL_ERR:
        h.fail(name, test, "onednn numerics", f"max relative error {err:.3g} > {FP32_MAX_REL_ERR}")
    FP32_LOGITS[name] = outputs[1] if has_logits else actual


def int8_outputs(name: str) -> dict:
    """Quantize, build and run one light model (in the shared worker process or inline).

    Returns ``{"outputs", "layers", "seconds", "cpu"}``, or ``{"skip": reason}`` /
    ``{"stage", "error"}`` (plain data: it crosses a process boundary).
    """
    zoo, mod, reason, _ = _load(name)
    if mod is None:
        return {"skip": reason} if reason.startswith("TVM") else {"stage": "import", "error": reason}
    (x,) = zoo.inputs.values()
    rng = np.random.default_rng(CALIB_SEED)
    calib = [rng.uniform(0.0, 1.0, x.shape).astype(np.float32) for _ in range(CALIB_BATCHES)]
    start, cpu = time.perf_counter(), time.process_time()
    try:
        qmod = tvm_onednn.quantize(mod, calib, calib_mode="naive")
    except Exception as err:  # noqa: BLE001
        return {"stage": "quantize", "error": h.first_line(err)}
    try:
        executable = h.compile_module(qmod, "onednn")
    except Exception as err:  # noqa: BLE001
        return {"stage": "int8 build", "error": h.first_line(err)}
    try:
        outputs = h.run_executable(executable, [x])
    except Exception as err:  # noqa: BLE001
        return {"stage": "int8 run", "error": h.first_line(err)}
    return {
        "outputs": outputs,
        "layers": h.quantized_weight_count(qmod),
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
    }


@pytest.mark.parametrize("name", MODELS)
def test_light_int8(name):
    test = "test_light_int8"
    zoo, mod, reason, has_logits = _load(name)
    result = h.shared(("light-int8", name), int8_outputs, name)
    if result is None:
        h.fail(name, test, "quantize", "the process crashed quantizing or building the model")
    if "skip" in result:
        h.skip(name, test, result["skip"])
    if "stage" in result:
        h.fail(name, test, result["stage"], result["error"])
    key = f"{test}[{name}]"
    outputs = result["outputs"]
    h.TIMINGS[key], h.CPU_TIMES[key] = result["seconds"], result["cpu"]
    actual, expected = outputs[0], zoo.expected[0]
    if actual.shape != expected.shape:
        h.fail(name, test, "int8 output", f"shape {actual.shape}, expected {expected.shape}")
    if not np.isfinite(actual).all():
        h.fail(name, test, "int8 output", "non-finite values")
    cos = h.cosine(actual, expected)
    h.COSINES[key] = cos
    h.INT8_LAYERS[key] = result["layers"]
    logits = outputs[1] if has_logits else actual
    line = f"{name}: int8 layers {h.INT8_LAYERS[key]}, cosine vs fp32 {cos:.6f}"
    fp32_logits = FP32_LOGITS.get(name)
    if fp32_logits is not None:
        logit_err = _rel_err(logits, fp32_logits)
        h.LOGIT_ERRORS[key] = logit_err
        line += f", logits max relative error vs fp32 {logit_err:.3g}"
    else:
        line += " (logits not checked: test_light_fp32 did not run or failed first)"
    print(line)
    if not cos > INT8_MIN_COSINE:
        h.fail(name, test, "int8 output", f"cosine vs fp32 {cos:.4f} <= {INT8_MIN_COSINE}")
    bound = INT8_LOGIT_REL_ERR_BY_MODEL.get(name, INT8_MAX_LOGIT_REL_ERR)
    if fp32_logits is not None and not logit_err <= bound:
        h.fail(
            name, test, "int8 output",
            f"logits max relative error vs fp32 {logit_err:.3g} > {bound}",
        )
