"""int8 MobileNetV2 (real ImageNet weights): top-1 agreement with float32 on real photos.

Calibration: 10 batches of 8 augmented crops (``imagenet_crops``, seed 0); evaluation: 200
other crops (seed 1), the setting of ``tutorials/quantize_mobilenet.py``. Issue 3 asks for
>= 90 % top-1 agreement (onnxruntime's ``quantize_static`` reaches ~79 % on such crops).
Measured on an AVX2 CPU (pair-bounded / halved weights, docs/quantization.md): naive 0.855,
entropy 0.900, percentile 0.915; top-5 agreement 0.995-1.000. The bounds below are those
measurements minus a few crops (each crop is 0.5 pt) for float rounding on other CPUs.
"""

from __future__ import annotations

import numpy as np
import pytest

import tvm_onednn
from tvm_onednn.testing import Runner, build

BATCH = 8
CALIB_BATCHES = 10
NUM_CROPS = 200
MIN_TOP1_AGREEMENT = {"naive": 0.83, "entropy": 0.88, "percentile": 0.90}
MIN_TOP5_AGREEMENT = 0.98


def _batches(x: np.ndarray) -> list[np.ndarray]:
    return [x[i : i + BATCH] for i in range(0, len(x), BATCH)]


@pytest.fixture(scope="module")
def mobilenet():
    """(float32 module, calibration batches, evaluation crops, float32 logits)."""
    from tvm_onednn.models import imagenet_crops, mobilenet_v2_onnx, mobilenet_v2_weights_path

    try:
        mobilenet_v2_weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as err:  # the README's set-up installs it
        pytest.skip(f"MobileNetV2 weights not installed: {err}")
    mod = tvm_onednn.from_onnx(mobilenet_v2_onnx(batch=BATCH))
    calib_x, _ = imagenet_crops(CALIB_BATCHES * BATCH, seed=0)
    eval_x, _ = imagenet_crops(NUM_CROPS, seed=1)
    run = Runner(build(mod))
    fp32 = np.concatenate([run(b) for b in _batches(eval_x)])
    return mod, [{"data": b} for b in _batches(calib_x)], eval_x, fp32


@pytest.mark.parametrize("calib_mode", sorted(MIN_TOP1_AGREEMENT))
def test_int8_agrees_with_float32(mobilenet, calib_mode):
    mod, calib, eval_x, fp32 = mobilenet
    qmod = tvm_onednn.quantize(mod, calib, calib_mode=calib_mode)
    run = Runner(build(qmod))
    int8 = np.concatenate([run(b) for b in _batches(eval_x)])
    top1 = int8.argmax(axis=1)
    fp32_top5 = np.argsort(-fp32, axis=1)[:, :5]
    agree1 = float(np.mean(top1 == fp32_top5[:, 0]))
    agree5 = float(np.mean([t in row for t, row in zip(top1, fp32_top5, strict=True)]))
    print(f"{calib_mode}: top-1 agreement {agree1:.3f}, top-5 {agree5:.3f}")
    assert agree1 >= MIN_TOP1_AGREEMENT[calib_mode], f"{calib_mode}: top-1 agreement {agree1}"
    assert agree5 >= MIN_TOP5_AGREEMENT, f"{calib_mode}: top-5 agreement {agree5}"

