"""End to end through ``tvm.compile(..., relax_pipeline="onednn")`` on real model graphs.

References are independent of our code: onnxruntime on the same ONNX model, or the
outputs stored beside ``light_resnet50.onnx`` in the onnx wheel.
"""

import numpy as np
import pytest

import tvm_onednn
from tvm_onednn.models.onnx_zoo import light_resnet50
from tvm_onednn.models.resnet import resnet_onnx
from tvm_onednn.models.transformer import encoder_block_onnx
from tvm_onednn.testing import Runner, build

ort = pytest.importorskip("onnxruntime")

FUSABLE = ("relax.nn.conv2d", "relax.matmul")


def _onnxruntime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _compile(model):
    mod = tvm_onednn.from_onnx(model)
    return mod, Runner(build(mod))


def _assert_close(actual, expected, rtol):
    """Relative to the output's scale: |a - e| <= rtol * max|e| elementwise."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def test_light_resnet50_matches_stored_output():
    zoo = light_resnet50()
    mod, runner = _compile(zoo.model)
    summary = tvm_onednn.offload_summary(mod)
    assert summary.offloaded_ops["relax.nn.conv2d"] == 53
    assert not any(op in summary.kept_ops for op in FUSABLE), str(summary)
    (x,) = zoo.inputs.values()
    np.testing.assert_allclose(runner(x), zoo.expected[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keep_batchnorm", [True, False])
def test_resnet50_matches_onnxruntime(keep_batchnorm):
    model = resnet_onnx(50, keep_batchnorm=keep_batchnorm, image_size=224)
    mod, runner = _compile(model)
    summary = tvm_onednn.offload_summary(mod)
    assert summary.offloaded_ops["relax.nn.conv2d"] == 53
    assert summary.offloaded_ops["relax.matmul"] == 1
    assert not any(op in summary.kept_ops for op in FUSABLE), str(summary)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    _assert_close(runner(x), _onnxruntime(model, {"data": x})[0], rtol=1e-3)


def test_transformer_encoder_block_matches_onnxruntime():
    model = encoder_block_onnx(batch=1, seq=64, hidden=128, heads=4, ffn=512)
    mod, runner = _compile(model)
    summary = tvm_onednn.offload_summary(mod)
    # Q, K, V, output projection and the two FFN matmuls carry constant weights.
    assert summary.offloaded_ops["relax.matmul"] >= 6
    assert summary.composites.get("onednn.matmul_bias_gelu") == 1, str(summary)
    x = np.random.default_rng(0).standard_normal((1, 64, 128)).astype("float32")
    _assert_close(runner(x), _onnxruntime(model, {"data": x})[0], rtol=1e-3)


def test_mobilenet_v2_real_weights_matches_onnxruntime():
    torch = pytest.importorskip("torch")
    del torch
    from tvm_onednn.models.images import imagenet_batch
    from tvm_onednn.models.mobilenet_v2 import mobilenet_v2_onnx

    x, _ = imagenet_batch(["chelsea", "coffee"])
    for fold in (True, False):
        model = mobilenet_v2_onnx(batch=2, fold_batchnorm=fold)
        mod, runner = _compile(model)
        summary = tvm_onednn.offload_summary(mod)
        assert summary.offloaded_ops["relax.nn.conv2d"] == 52
        assert summary.offloaded_ops["relax.matmul"] == 1
        assert not any(op in summary.kept_ops for op in FUSABLE), str(summary)
        assert "relax.nn.batch_norm" not in summary.kept_ops
        # All 10 residual adds fuse (the residual is the add's lhs in 5 of them).
        assert summary.composites["onednn.conv2d_bias_add"] == 10
        assert summary.regions == 1  # the reshape between pool and classifier is offloaded
        expected = _onnxruntime(model, {"data": x})[0]
        actual = runner(x)
        _assert_close(actual, expected, rtol=1e-3)
        assert (actual.argmax(1) == expected.argmax(1)).all()
