"""``quantize`` never raises on a model the float32 pipeline runs (issue 10).

A layer that cannot be quantized stays float32 with a reason: weights holding inf/NaN,
tensors whose calibration values are not finite, a calibration build that fails on oneDNN
(TVM's pipeline takes over) or everywhere, and the unusual layers of small torch models
(group / depthwise convs, HardSwish, SiLU, several outputs, int64 inputs, batched or run-time
matmul weights, 1-D / 3-D inputs, conv1d, transposed convs...).
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax

import tvm_onednn
from tvm_onednn.quantize import quantize
from tvm_onednn.testing import Runner, build

from .helpers import main_ops
from .models import Model, small_cnn


def _normal(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype("float32")


def _conv(x, w):
    return relax.op.nn.conv2d(x, relax.const(w), padding=1)


def _two_branches(matmul_weight: np.ndarray | None = None) -> Model:
    """``x -> conv-relu -> conv`` and ``z -> matmul``: two inputs, two outputs."""
    rng = np.random.default_rng(0)
    w_mm = _normal(rng, 8, 4) if matmul_weight is None else matmul_weight
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    z = relax.Var("z", relax.TensorType([2, 8], "float32"))
    with bb.function("main", [x, z]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(bb.emit(_conv(x, _normal(rng, 8, 4, 3, 3)))))
            o = bb.emit(_conv(y, _normal(rng, 8, 8, 3, 3)))
            m = bb.emit(relax.op.matmul(z, relax.const(w_mm)))
            gv = bb.emit_output(relax.Tuple([o, m]))
        bb.emit_func_output(gv)
    return Model(bb.finalize())


def _batches(count: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"x": _normal(rng, 1, 4, 8, 8, scale=1.0), "z": _normal(rng, 2, 8, scale=1.0)}
        for _ in range(count)
    ]


def _close(qmod, mod, batch, rtol=0.1):
    """The int8 oneDNN build runs and stays within ``rtol`` of float32 (relative to max)."""
    args = list(batch.values()) if isinstance(batch, dict) else list(batch)
    expected = Runner(build(mod, "default"))(*args)
    actual = Runner(build(qmod, "onednn"))(*args)
    pairs = zip(actual, expected) if isinstance(expected, list) else [(actual, expected)]
    for a, e in pairs:
        assert a.shape == e.shape and np.isfinite(a).all()
        scale = float(np.abs(e).max()) or 1.0
        np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)


def test_non_finite_calibration_values_keep_their_readers_float32():
    model = _two_branches()
    batches = _batches(3)
    batches[1]["z"] = batches[1]["z"].copy()
    batches[1]["z"][0, 0] = np.inf  # e.g. an overflowing tensor: its reader cannot be scaled
    qmod, report = quantize(model.mod, batches, return_report=True)
    assert report.quantized() == ["conv2d_0", "conv2d_1"]
    matmul = report.layer("matmul_0")
    assert matmul.reason_kind == "calibration"
    assert matmul.reason == (
        "no calibration range for its input (matmul_0_input: non-finite values (inf))"
    )
    assert report.unusable_ranges == {"matmul_0_input": "non-finite values (inf)"}
    _close(qmod, model.mod, _batches(1, seed=7)[0])


@pytest.mark.parametrize("mode", ["entropy", "percentile"])
def test_non_finite_values_with_histogram_collectors(mode):
    model = _two_branches()
    batches = _batches(2)
    batches[0]["z"] = np.full((2, 8), np.nan, "float32")
    _, report = quantize(model.mod, batches, calib_mode=mode, return_report=True)
    assert report.quantized() == ["conv2d_0", "conv2d_1"]
    assert "non-finite values (NaN)" in report.layer("matmul_0").reason


def test_non_finite_weights_stay_float32():
    weight = _normal(np.random.default_rng(3), 8, 4)
    weight[2, 1] = np.inf
    model = _two_branches(weight)
    qmod, report = quantize(model.mod, _batches(1), return_report=True)
    matmul = report.layer("matmul_0")
    assert (matmul.reason_kind, matmul.reason) == (
        "unsupported",
        "its weights hold non-finite values (inf or NaN)",
    )
    assert report.quantized() == ["conv2d_0", "conv2d_1"]


def _failing_compile(monkeypatch, failing: tuple[str, ...]):
    real = tvm.compile

    def compile(mod, target=None, relax_pipeline="default", **kwargs):
        if relax_pipeline in failing:
            raise RuntimeError(f"{relax_pipeline} exploded\n  (a long backtrace)")
        return real(mod, target=target, relax_pipeline=relax_pipeline, **kwargs)

    monkeypatch.setattr(tvm, "compile", compile)


def test_calibration_falls_back_to_tvm_and_says_so(monkeypatch):
    model = small_cnn()
    _failing_compile(monkeypatch, ("onednn",))
    _, report = quantize(model.mod, model.batches(2), return_report=True)
    assert report.num_quantized == report.num_layers
    assert report.backend == "default" and report.calibration_fell_back
    assert report.fallbacks == [("onednn", "build failed: RuntimeError: onednn exploded")]
    text = report.summary()
    assert "ran on TVM's default pipeline" in text
    assert "the onednn calibration build failed: RuntimeError: onednn exploded" in text
    assert report.as_dict()["calibration"]["fallbacks"] == [
        {"backend": "onednn", "error": "build failed: RuntimeError: onednn exploded"}
    ]


def test_calibration_that_runs_nowhere_keeps_the_model_float32(monkeypatch):
    model = small_cnn()
    _failing_compile(monkeypatch, ("onednn", "default"))
    qmod, report = quantize(model.mod, model.batches(1), return_report=True)
    assert report.num_quantized == 0 and report.backend is None
    assert {l.reason_kind for l in report.layers} == {"calibration"}
    assert "runs on no backend" in report.layer("conv2d_0").reason
    assert "quantize" not in main_ops(qmod)


def test_a_failing_first_calibration_run_moves_to_tvm(monkeypatch):
    """oneDNN builds but its first run fails: the batch runs again on TVM's pipeline."""
    real_vm = relax.VirtualMachine
    made = []

    class FirstVmFails:
        def __init__(self, executable, device):
            self.vm, self.first = real_vm(executable, device), not made
            made.append(self)

        def __getitem__(self, name):
            if self.first:
                raise RuntimeError("oneDNN primitive creation failed")
            return self.vm[name]

    monkeypatch.setattr(relax, "VirtualMachine", FirstVmFails)
    model = small_cnn()
    _, report = quantize(model.mod, model.batches(2), return_report=True)
    assert len(made) == 2 and report.backend == "default" and report.batches == 2
    error = "run failed: RuntimeError: oneDNN primitive creation failed"
    assert report.fallbacks == [("onednn", error)]
    assert report.num_quantized == report.num_layers


def test_calibration_that_fails_to_run_everywhere_keeps_the_model_float32(monkeypatch):
    class NoRun:
        def __init__(self, executable, device):
            pass

        def __getitem__(self, name):
            raise RuntimeError("no run")

    monkeypatch.setattr(relax, "VirtualMachine", NoRun)
    model = small_cnn()
    _, report = quantize(model.mod, model.batches(1), return_report=True)
    assert report.num_quantized == 0 and report.backend is None
    assert report.fallbacks == [
        ("onednn", "run failed: RuntimeError: no run"),
        ("default", "run failed: RuntimeError: no run"),
    ]


# ----------------------------------------------------------------------------------------
# Hand-built Relax forms.


def _no_dataflow() -> Model:
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    with bb.function("main", [x]):
        y = bb.emit(relax.op.nn.relu(bb.emit(_conv(x, _normal(rng, 8, 4, 3, 3)))))
        p = bb.emit(relax.op.nn.max_pool2d(y, (2, 2), (2, 2)))
        bb.emit_func_output(bb.emit(_conv(p, _normal(rng, 8, 8, 3, 3))))
    return Model(bb.finalize(), input_shape=(1, 4, 8, 8))


def _split_concat() -> Model:
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 8, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            parts = bb.emit(relax.op.split(x, 2, axis=1))
            a = bb.emit(relax.TupleGetItem(parts, 0))
            b = bb.emit(relax.TupleGetItem(parts, 1))
            a = bb.emit(relax.op.nn.relu(bb.emit(_conv(a, _normal(rng, 4, 4, 3, 3)))))
            b = bb.emit(relax.op.nn.relu(bb.emit(_conv(b, _normal(rng, 4, 4, 3, 3)))))
            c = bb.emit(relax.op.concat([a, b], axis=1))
            out = bb.emit(_conv(c, _normal(rng, 4, 8, 3, 3)))
            gv = bb.emit_output(relax.Tuple([out, c]))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), input_shape=(1, 8, 8, 8))


def _dynamic_batch() -> Model:
    rng = np.random.default_rng(0)
    n = tvm.tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([n, 4, 8, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(bb.emit(_conv(x, _normal(rng, 8, 4, 3, 3)))))
            gv = bb.emit_output(bb.emit(_conv(y, _normal(rng, 8, 8, 3, 3))))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), input_shape=(4, 4, 8, 8))  # the batch n is free


def _with_subroutine() -> Model:
    """``main`` (conv-relu) calls another Relax function (conv-relu) after its dataflow block.

    Only ``main`` is quantized; the other function must survive untouched.
    """
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    with bb.function("helper", [x]):
        with bb.dataflow():
            gv = bb.emit_output(relax.op.nn.relu(bb.emit(_conv(x, _normal(rng, 4, 4, 3, 3)))))
        bb.emit_func_output(gv)
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            gv = bb.emit_output(relax.op.nn.relu(bb.emit(_conv(x, _normal(rng, 4, 4, 3, 3)))))
        out = bb.emit(relax.Call(bb.get().get_global_var("helper"), [gv]))
        bb.emit_func_output(out)
    return Model(bb.finalize(), input_shape=(1, 4, 8, 8))


def _matmul_forms() -> Model:
    """x @ W^T (folded), W @ x, batched const weight, vector weight, linear + relu, matmul."""
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([3, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.matmul(x, relax.op.permute_dims(relax.const(_normal(rng, 4, 8)))))
            b = bb.emit(relax.op.matmul(relax.const(_normal(rng, 5, 3)), x))
            x3 = relax.op.reshape(x, [3, 1, 8])
            c = bb.emit(relax.op.matmul(x3, relax.const(_normal(rng, 3, 8, 2))))
            d = bb.emit(relax.op.matmul(x, relax.const(_normal(rng, 8))))
            e = relax.op.linear(x, relax.const(_normal(rng, 6, 8)), relax.const(_normal(rng, 6)))
            e = bb.emit(relax.op.nn.relu(bb.emit(e)))
            f = bb.emit(relax.op.matmul(e, relax.const(_normal(rng, 6, 6))))
            gv = bb.emit_output(relax.Tuple([a, b, c, d, f]))
        bb.emit_func_output(gv)
    return Model(bb.finalize(), input_shape=(3, 8))


@pytest.mark.parametrize(
    "make, quantized",
    [
        (_no_dataflow, []),  # fused (fp32 and int8) only inside dataflow blocks
        (_split_concat, ["conv2d_0", "conv2d_1", "conv2d_2"]),
        (_dynamic_batch, ["conv2d_0", "conv2d_1"]),  # a symbolic batch quantizes
        (_with_subroutine, ["conv2d_0"]),
        (_matmul_forms, ["matmul_0", "matmul_4", "matmul_5"]),
    ],
)
def test_relax_forms(make, quantized):
    model = make()
    qmod, report = quantize(model.mod, model.batches(2), return_report=True)
    chains = [n for n in report.quantized() if n.startswith(("conv2d", "matmul"))]
    assert chains == quantized
    for layer in report.layers:
        assert layer.quantized or layer.reason, layer
    _close(qmod, model.mod, model.batches(1, seed=5))


def test_outside_a_dataflow_block():
    _, report = quantize(_no_dataflow().mod, _no_dataflow().batches(1), return_report=True)
    assert set(report.kept_float32().values()) == {
        "it is outside a dataflow block (chains are fused in those)"
    }


def test_matmul_reasons():
    _, report = quantize(_matmul_forms().mod, _matmul_forms().batches(1), return_report=True)
    assert report.kept_float32() == {
        "matmul_1": "the constant is the first operand (int8 matmul takes x @ W)",
        "matmul_2": "its constant weight is not 2-D [K, N]",
        "matmul_3": "matmul operands must be at least 2-D",
    }
    assert "two activations" not in str(report)  # no matmul here multiplies two activations


# ----------------------------------------------------------------------------------------
# torch -> ONNX models.

torch = pytest.importorskip("torch")
nn = torch.nn


def _onnx_module(model, args):
    buf = io.BytesIO()
    names = [f"in{i}" for i in range(len(args))]
    # dynamo=False: torch's default (dynamo) exporter needs onnxscript, not installed here.
    torch.onnx.export(
        model.eval(), tuple(args), buf, opset_version=17, input_names=names, dynamo=False
    )
    return tvm_onednn.from_onnx(onnx.load_from_string(buf.getvalue()))


class _ConvBnAct(nn.Module):
    def __init__(self, act, groups=1):
        super().__init__()
        self.c0 = nn.Conv2d(8, 16, 3, padding=1, groups=groups)
        self.bn = nn.BatchNorm2d(16)
        self.c1 = nn.Conv2d(16, 16, 3, padding=1, groups=16)  # depthwise
        self.act = act

    def forward(self, x):
        return self.c1(self.act(self.bn(self.c0(x))))


class _TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0, self.c1 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.c0(x))
        return self.c1(y), y


class _Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.e, self.l = nn.Embedding(10, 8), nn.Linear(8, 4)

    def forward(self, idx):
        return self.l(self.e(idx))


class _BatchedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 8, 4))
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return self.l(torch.relu(torch.matmul(x, self.w)))


class _Matmul1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 4)

    def forward(self, x):
        return self.l(x)


class _RuntimeWeights(nn.Module):
    def forward(self, a, b):
        return torch.relu(torch.matmul(a, b))


class _Conv1dTransposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1d = nn.Conv1d(3, 8, 3, padding=1)
        self.ct = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.c = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.c1d(x)).reshape(1, 8, 4, 4)
        return self.c(torch.relu(self.ct(y)))


def _rand(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(11))


TORCH_CASES = {
    # name: (module, inputs, int8 layers, int8 composite that must appear)
    "hardswish": (
        _ConvBnAct(nn.Hardswish()), [_rand(1, 8, 8, 8)], 2, "onednn.qconv2d_bias_hardswish"
    ),
    "silu": (_ConvBnAct(nn.SiLU()), [_rand(1, 8, 8, 8)], 2, "onednn.qconv2d_bias_silu"),
    "group_conv": (
        _ConvBnAct(nn.ReLU(), groups=4), [_rand(1, 8, 8, 8)], 2, "onednn.qconv2d_bias_relu"
    ),
    "two_outputs": (_TwoOutputs(), [_rand(1, 8, 8, 8)], 2, "onednn.qconv2d_bias_relu"),
    "int64_input": (_Embedding(), [torch.tensor([[1, 2, 3]])], 1, "onednn.qmatmul_bias"),
    "batched_weight": (_BatchedWeight(), [_rand(2, 3, 8)], 1, "onednn.qmatmul_bias"),
    "matmul_1d": (_Matmul1d(), [_rand(8)], 0, None),
    "runtime_weights": (_RuntimeWeights(), [_rand(3, 8), _rand(8, 4)], 0, None),
    "conv1d_convtranspose": (_Conv1dTransposed(), [_rand(1, 3, 16)], 1, "onednn.qconv2d_bias"),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_torch_models(name):
    torch.manual_seed(0)
    module, args, int8_layers, composite = TORCH_CASES[name]
    with torch.no_grad():
        for m in module.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    mod = _onnx_module(module, args)
    batch = [a.numpy() for a in args]
    # min/max ranges: the bound of _close assumes nothing of the calibration batch is clipped
    # float_stem=False: these small nets are all stem (a conv feeding a depthwise conv).
    qmod, report = quantize(mod, [batch], calib_mode="naive", float_stem=False,
                            return_report=True)  # fmt: skip
    chains = [l for l in report.layers if l.kind in ("conv2d", "matmul")]
    assert sum(l.quantized for l in chains) == int8_layers, str(report)
    if composite is not None:
        assert tvm_onednn.offload_summary(qmod).composites[composite] >= 1
    _close(qmod, mod, batch)
