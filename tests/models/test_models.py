"""The model zoo: every builder gives a valid, deterministic ONNX model that runs in onnxruntime."""

from __future__ import annotations

import functools
import math
import time
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tvm_onednn.models import (
    encoder_block_onnx,
    imagenet_batch,
    imagenet_crops,
    light_resnet50,
    load_photos,
    mlp_onnx,
    preprocess,
    resnet_onnx,
    small_resnet_onnx,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def normal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


@functools.cache
def cached_resnet(depth: int, batch: int = 1, image_size: int = 64) -> onnx.ModelProto:
    """Build once per session (ResNet-50 takes ~1 s); callers must not mutate the result."""
    return resnet_onnx(depth, batch=batch, image_size=image_size)


def check_model(model: onnx.ModelProto, input_shape: list[int], output_shape: list[int]) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (inp,) = model.graph.input
    assert inp.name == "data"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == input_shape
    (out,) = model.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == output_shape


# ---------------------------------------------------------------- ResNets


def test_small_resnet_builds_fast_and_runs() -> None:
    start = time.perf_counter()
    model = small_resnet_onnx()
    assert time.perf_counter() - start < 0.5
    check_model(model, [1, 3, 32, 32], [1, 10])
    counts = op_counts(model)
    assert counts["Conv"] == 6 and counts["BatchNormalization"] == 6  # incl. one downsample
    assert counts["Add"] == 2 and counts["MaxPool"] == 1 and counts["Gemm"] == 1
    (y,) = run_ort(model, {"data": normal((1, 3, 32, 32))})
    assert y.shape == (1, 10) and np.isfinite(y).all()


@pytest.mark.parametrize(
    ("depth", "convs", "relus", "adds"), [(18, 20, 17, 8), (34, 36, 33, 16), (50, 53, 49, 16)]
)
def test_resnet_structure(depth: int, convs: int, relus: int, adds: int) -> None:
    model = cached_resnet(depth, batch=2)
    check_model(model, [2, 3, 64, 64], [2, 1000])
    counts = op_counts(model)
    assert counts["Conv"] == counts["BatchNormalization"] == convs
    assert counts["Relu"] == relus and counts["Add"] == adds
    assert counts["MaxPool"] == counts["GlobalAveragePool"] == counts["Gemm"] == 1
    (y,) = run_ort(model, {"data": normal((2, 3, 64, 64))})
    assert y.shape == (2, 1000)


def test_resnet50_matches_onnx_zoo_structure() -> None:
    ours = op_counts(cached_resnet(50, batch=2))
    zoo = op_counts(light_resnet50().model)
    for op in ("Conv", "BatchNormalization", "Relu", "MaxPool"):
        assert ours[op] == zoo[op], op
    assert ours["Add"] == zoo["Sum"]


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_activations_stay_healthy(depth: int) -> None:
    """Calibrated BN statistics keep every ReLU half-active and O(1) at full resolution."""
    model = onnx.ModelProto()
    model.CopyFrom(cached_resnet(depth, image_size=224))
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu"]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(r) for r in relus)
    logits, *acts = run_ort(model, {"data": normal((1, 3, 224, 224), seed=7)})
    assert np.isfinite(logits).all() and 0.05 < logits.std() < 20
    for name, act in zip(relus, acts, strict=True):
        assert 0.25 < (act > 0).mean() < 0.99, name
        assert 0.1 < act.std() < 10, name


def test_resnet_folded_batchnorm_is_equivalent() -> None:
    kept = cached_resnet(18)
    folded = resnet_onnx(18, image_size=64, keep_batchnorm=False)
    assert op_counts(folded)["BatchNormalization"] == 0
    x = {"data": normal((1, 3, 64, 64))}
    np.testing.assert_allclose(run_ort(folded, x)[0], run_ort(kept, x)[0], rtol=1e-4, atol=1e-4)


def test_resnet_is_deterministic_per_seed() -> None:
    a = small_resnet_onnx(seed=3).SerializeToString()
    assert a == small_resnet_onnx(seed=3).SerializeToString()
    assert a != small_resnet_onnx(seed=4).SerializeToString()
    full = cached_resnet(18, image_size=224).SerializeToString()
    assert resnet_onnx(18).SerializeToString() == full


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_is_torchvision_resnet(depth: int) -> None:
    """The ONNX weights load into a torchvision-layout module and give the same logits."""
    torch = pytest.importorskip("torch")
    from tvm_onednn.models import resnet_torch

    model = cached_resnet(depth, batch=2)
    x = normal((2, 3, 64, 64))
    with torch.no_grad():
        expected = resnet_torch(depth, model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_ort(model, {"data": x})[0], expected, rtol=1e-4, atol=1e-4)


def test_resnet_rejects_unknown_depth() -> None:
    with pytest.raises(ValueError, match="depth"):
        resnet_onnx(101)


# ---------------------------------------------------------------- Transformer / MLP


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * gamma + beta


def _encoder_reference(x: np.ndarray, w: dict[str, np.ndarray], heads: int) -> np.ndarray:
    b, s, hidden = x.shape
    d = hidden // heads

    def dense(v: np.ndarray, prefix: str) -> np.ndarray:
        return v @ w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    def split(v: np.ndarray) -> np.ndarray:
        return v.reshape(b, s, heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, hidden)
    attn = dense(context, "attention.output.dense") + x
    ln1 = "attention.output.LayerNorm"
    attn = _layer_norm(attn, w[f"{ln1}.weight"], w[f"{ln1}.bias"])
    inter = dense(attn, "intermediate.dense")
    erf = np.vectorize(math.erf, otypes=[np.float64])
    inter = inter * 0.5 * (1.0 + erf(inter / math.sqrt(2.0)))
    out = dense(inter, "output.dense") + attn
    return _layer_norm(out, w["output.LayerNorm.weight"], w["output.LayerNorm.bias"])


def test_encoder_block_matches_numpy_reference() -> None:
    model = encoder_block_onnx(batch=2, seq=16, hidden=64, heads=4, ffn=128)
    check_model(model, [2, 16, 64], [2, 16, 64])
    counts = op_counts(model)
    assert counts["MatMul"] == 8 and counts["Softmax"] == 1 and counts["Erf"] == 1
    assert counts["LayerNormalization"] == 2 and counts["Transpose"] == 4
    x = normal((2, 16, 64))
    (y,) = run_ort(model, {"data": x})
    expected = _encoder_reference(x.astype(np.float64), weights(model), heads=4)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_encoder_block_default_shape_and_determinism() -> None:
    model = encoder_block_onnx()
    check_model(model, [1, 128, 256], [1, 128, 256])
    assert model.SerializeToString() == encoder_block_onnx().SerializeToString()
    with pytest.raises(ValueError, match="divisible"):
        encoder_block_onnx(hidden=100, heads=3)


def test_mlp_matches_numpy_reference() -> None:
    model = mlp_onnx(batch=4, in_features=32, hidden=(64, 48), out_features=5, seed=1)
    check_model(model, [4, 32], [4, 5])
    assert op_counts(model) == Counter({"MatMul": 3, "Add": 3, "Relu": 2})
    w = weights(model)
    x = normal((4, 32))
    h = np.maximum(x @ w["fc0.weight"] + w["fc0.bias"], 0)
    h = np.maximum(h @ w["fc1.weight"] + w["fc1.bias"], 0)
    expected = h @ w["fc2.weight"] + w["fc2.bias"]
    np.testing.assert_allclose(run_ort(model, {"data": x})[0], expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- ONNX zoo


def test_light_resnet50_reproduces_stored_output() -> None:
    zoo = light_resnet50()
    counts = op_counts(zoo.model)
    assert counts["Conv"] == 53 and counts["BatchNormalization"] == 53 and counts["Sum"] == 16
    (name,) = zoo.inputs
    assert zoo.inputs[name].shape == (1, 3, 224, 224)
    (y,) = run_ort(zoo.model, zoo.inputs)
    (expected,) = zoo.expected
    assert y.shape == expected.shape == (1, 1000)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- Photos


def test_photos_and_preprocessing() -> None:
    labeled = load_photos(labeled_only=True)
    assert labeled["chelsea"][1] == 285 and labeled["coffee"][1] == 967
    for image, _ in load_photos().values():
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    x = preprocess(labeled["chelsea"][0])
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert -2.2 < x.min() and x.max() < 2.7  # (0 - mean) / std .. (1 - mean) / std
    batch, labels = imagenet_batch(["chelsea", "coffee"])
    assert batch.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(batch[0], x)
    assert labels.tolist() == [285, 967]


def test_imagenet_crops_are_deterministic_and_varied() -> None:
    x, labels = imagenet_crops(8, seed=1, size=96)
    assert x.shape == (8, 3, 96, 96) and x.dtype == np.float32 and labels.shape == (8,)
    again, labels_again = imagenet_crops(8, seed=1, size=96)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(x, imagenet_crops(8, seed=2, size=96)[0])
    assert len({view.tobytes() for view in x}) == 8
    assert set(labels.tolist()) >= {285, 967}


# ---------------------------------------------------------------- MobileNetV2 (real weights)


@pytest.fixture(scope="module")
def mobilenet() -> onnx.ModelProto:
    pytest.importorskip("torch")
    from tvm_onednn.models import mobilenet_v2_onnx

    return mobilenet_v2_onnx()


def test_mobilenet_v2_export_ops(mobilenet: onnx.ModelProto) -> None:
    check_model(mobilenet, [1, 3, 224, 224], [1, 1000])
    counts = op_counts(mobilenet)
    assert counts["Conv"] == 52 and counts["Clip"] == 35 and counts["Add"] == 10
    assert counts["GlobalAveragePool"] == counts["Gemm"] == 1
    assert counts["BatchNormalization"] == 0


def test_mobilenet_v2_classifies_the_cat(mobilenet: onnx.ModelProto) -> None:
    x, _ = imagenet_batch(["chelsea", "coffee"])
    logits = np.concatenate([run_ort(mobilenet, {"data": xi[None]})[0] for xi in x])
    assert logits[0].argmax() in CAT_CLASSES
    assert logits[1].argmax() == 967  # espresso


def test_mobilenet_v2_kept_batchnorm_matches_torch(mobilenet: onnx.ModelProto) -> None:
    torch = pytest.importorskip("torch")
    from tvm_onednn.models import mobilenet_v2_onnx, mobilenet_v2_torch

    kept = mobilenet_v2_onnx(fold_batchnorm=False)
    bns = [n for n in kept.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 52
    for bn in bns:  # inference-form BN: one output, training_mode off
        assert len(bn.output) == 1
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in bn.attribute}
        assert attrs.get("training_mode", 0) == 0
    x = normal((1, 3, 224, 224), seed=5)
    with torch.no_grad():
        expected = mobilenet_v2_torch()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_ort(kept, {"data": x})[0], expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(run_ort(mobilenet, {"data": x})[0], expected, rtol=1e-3, atol=1e-3)
