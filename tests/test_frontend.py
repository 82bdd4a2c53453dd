"""tvm_onednn.from_onnx: one loader, one error type, shape folding before TVM's importer."""

import io
import logging
import os
import warnings

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
from tvm_onednn.target import host_target_spec

from .yolo_like import yolov8_like_onnx

ort = pytest.importorskip("onnxruntime")

LOGGER = "tvm_onednn.frontend"


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
    assert frontend._dynamic_values(mod) == 0
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    _close(_run(mod, x), _ort(encoder_onnx, {"x": x}))


def test_the_log_names_what_was_folded(encoder_onnx, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        from_onnx(onnx.load_from_string(encoder_onnx), {"x": [2, 16, 32]})
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("TVM's ONNX importer failed" in m and "folding" in m for m in messages), messages
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
    assert frontend._dynamic_values(plain) > 0  # the box chunk's Slice has run-time bounds
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = tvm_onednn.from_onnx(model)
    assert frontend._dynamic_values(mod) == 0
    assert any(r.getMessage().startswith("folded ") for r in caplog.records if r.name == LOGGER)
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype("float32")
    out = _run(mod, x)
    assert out.shape == (1, 84, 16 * 16 + 8 * 8 + 4 * 4)
    _close(out, _ort(blob, {"images": x}))


def test_dynamic_batch_yolo_with_a_static_shape_dict():
    blob = yolov8_like_onnx(size=64, w=0.125, dynamic_batch=True)
    mod = from_onnx(blob, {"images": [2, 3, 64, 64]})
    assert frontend._dynamic_values(mod) == 0
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype("float32")
    _close(_run(mod, x), _ort(blob, {"images": x}))


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
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mod = from_onnx(blob)
    assert frontend._dynamic_values(mod) > 0
    assert any("keeping the plain import" in r.getMessage() for r in caplog.records)


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


def test_dynamic_dim_without_shape():
    with pytest.raises(ModelImportError) as info:
        from_onnx(_relu(["N", 3]))
    assert str(info.value) == (
        "input 'x' has a dynamic shape ['N', 3]; give a static one, e.g. shape_dict={'x': [1, 3]}"
    )
    assert (info.value.input_name, info.value.example) == ("x", [1, 3])
    with pytest.raises(ModelImportError, match=r"^input 'x' has a non-static shape \[0, 3\]"):
        from_onnx(_relu(["N", 3]), {"x": [0, 3]})


def test_static_shapes_may_be_numpy_ints():
    mod = from_onnx(_relu(["N", 3]), {"x": np.array([4, 3])})
    assert [int(d) for d in mod["main"].params[0].ty.shape.values] == [4, 3]


@pytest.mark.filterwarnings("ignore:No Op registered for NoSuchOp")
def test_an_op_tvm_cannot_import_is_a_model_import_error():
    model = _relu([1, 3])
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelImportError, match="^TVM's ONNX importer failed: .*NoSuchOp") as info:
        from_onnx(model)
    assert "after folding shape computations: onnxruntime could not fold" in str(info.value)


def test_the_command_line_phrases_the_fix_as_a_flag(tmp_path):
    from tvm_onednn.interface.io import InputError, import_model

    onnx.save(_relu(["N", 3]), tmp_path / "dyn.onnx")
    with pytest.raises(InputError) as info:
        import_model(tmp_path / "dyn.onnx")
    assert str(info.value) == (
        "input 'x' has a dynamic shape ['N', 3]; give a static one, e.g. --input-shapes x:1,3"
    )
    mod, specs = import_model(tmp_path / "dyn.onnx", {"x": [4, 3]})
    assert [(s.name, s.shape, s.dtype) for s in specs] == [("x", (4, 3), "float32")]
