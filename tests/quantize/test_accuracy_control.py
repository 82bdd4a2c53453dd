"""Accuracy-controlled quantization: ``quantize(..., validation=(data, metric_fn), max_drop)``.

The net has one sensitive layer: conv2d_1 writes a channel of ~500 (a bias) that conv2d_2
ignores (its weights for that channel are zero), so a per-tensor int8 scale for conv2d_2's
input crushes every other channel, while conv2d_1's own int8 output, read only by conv2d_2,
costs nothing once conv2d_2 is float32. The control must revert conv2d_2 alone and meet the
budget; its metrics are checked against TVM's own build (``"default"`` pipeline) of the
returned QDQ module and of the float32 model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tvm import relax

import tvm_onednn
from tvm_onednn.quantize import AccuracyControlReport, top1_agreement
from tvm_onednn.testing import Runner, build

BATCH, SIZE, CHANNELS, CLASSES = 2, 8, 8, 5
MAX_DROP = 0.02


def _sensitive_net(seed: int = 0):
    rng = np.random.default_rng(seed)
    c = CHANNELS
    w0 = (rng.standard_normal((c, 3, 3, 3)) * 0.3).astype("float32")
    w1 = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype("float32")
    b1 = (rng.standard_normal((1, c, 1, 1)) * 0.1).astype("float32")
    b1[0, 0] = 500.0  # an outlier channel ...
    w2 = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype("float32")
    w2[:, 0] = 0.0  # ... that the next conv ignores
    w3 = (rng.standard_normal((c, CLASSES)) / np.sqrt(c)).astype("float32")
    x = relax.Var("data", relax.TensorType([BATCH, 3, SIZE, SIZE], "float32"))
    bb = relax.BlockBuilder()

    def conv(w, t):
        return relax.op.nn.conv2d(t, relax.const(w), padding=(1, 1, 1, 1))

    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(conv(w0, x)))
            y = bb.emit(relax.op.nn.relu(relax.op.add(conv(w1, y), relax.const(b1))))
            y = bb.emit(relax.op.nn.relu(conv(w2, y)))
            g = bb.emit(relax.op.mean(y, axis=[2, 3]))
            out = bb.emit_output(relax.op.matmul(g, relax.const(w3)))
        bb.emit_func_output(out)
    return bb.finalize()


def _inputs(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype("float32") for _ in range(count)]


def neg_rel_error(outputs: list, fp32_outputs: list) -> float:
    """``-||out - ref|| / ||ref||`` over all batches (0 for the float32 model)."""
    out, ref = np.concatenate(outputs), np.concatenate(fp32_outputs)
    return -float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def setup():
    """(model, calibration batches, validation batches, TVM-default float32 outputs)."""
    mod = _sensitive_net()
    val = _inputs(8, seed=2)
    fp32 = [Runner(build(mod, "default"))(x) for x in val]
    return mod, _inputs(4, seed=1), val, fp32


@pytest.fixture(scope="module")
def controlled(setup):
    mod, calib, val, _ = setup
    return tvm_onednn.quantize(
        mod, calib, validation=(val, neg_rel_error), max_drop=MAX_DROP, return_report=True
    )


def _reference_metric(qmod, val, fp32) -> float:
    """The metric of ``qmod`` built by TVM's own pipeline (fake-quantized QDQ)."""
    run = Runner(build(qmod, "default"))
    return neg_rel_error([run(x) for x in val], fp32)


def test_reverts_the_sensitive_layer_and_meets_the_budget(setup, controlled):
    _, _, val, fp32 = setup
    qmod, report = controlled
    control = report.accuracy_control
    assert isinstance(control, AccuracyControlReport)
    assert control.reverted == ["conv2d_2"], control.ranking
    assert control.ranking[0][0] == "conv2d_2"
    assert control.metric_fp32 == pytest.approx(0.0, abs=1e-6)
    assert control.metric_fp32 - control.metric_int8 > 5 * MAX_DROP  # really sensitive
    assert control.met and control.drop <= MAX_DROP
    assert control.evaluations == 2  # everything int8, then conv2d_2 reverted
    assert control.builds == 1 + 2 + 4  # float32, 2 evaluations, 4 ranking builds
    assert control.validation_batches == len(val)
    # The returned model's metric, recomputed on TVM's own build of it: 1e-3 covers the
    # rounding differences between oneDNN int8 kernels and TVM's fake-quantized float math.
    assert _reference_metric(qmod, val, fp32) == pytest.approx(control.metric, abs=1e-3)
    assert -_reference_metric(qmod, val, fp32) <= MAX_DROP


def test_report_marks_the_reverted_layer(controlled):
    _, report = controlled
    layer = report.layer("conv2d_2")
    assert not layer.quantized and layer.reason_kind == "accuracy"
    assert "accuracy control" in layer.reason
    assert report.quantized() == ["conv2d_0", "conv2d_1", "matmul_0"]
    assert "accuracy control: metric fp32" in report.summary()
    assert "kept float32 by accuracy control (1)" in str(report)
    data = json.loads(json.dumps(report.as_dict()))
    assert data["accuracy_control"]["reverted"] == ["conv2d_2"]
    assert data["accuracy_control"]["met"] is True


def test_full_int8_metric_matches_plain_quantize(setup, controlled):
    """``metric_int8`` is the metric of what ``quantize`` gives without validation."""
    mod, calib, val, fp32 = setup
    plain = tvm_onednn.quantize(mod, calib)
    expected = _reference_metric(plain, val, fp32)
    assert controlled[1].accuracy_control.metric_int8 == pytest.approx(expected, abs=1e-3)


def test_within_budget_nothing_is_reverted(setup):
    mod, calib, val, _ = setup
    qmod, report = tvm_onednn.quantize(
        mod, calib, validation=(val, neg_rel_error), max_drop=1.0, return_report=True
    )
    control = report.accuracy_control
    assert control.reverted == [] and control.evaluations == 1 and control.ranking == []
    assert control.builds == 2
    assert report.num_quantized == 4
    plain = Runner(build(tvm_onednn.quantize(mod, calib)))
    run = Runner(build(qmod))
    np.testing.assert_array_equal(run(val[0]), plain(val[0]))


def test_a_budget_int8_cannot_meet_reverts_everything_and_says_so(setup, caplog):
    """max_drop=0 with an error metric: every int8 layer costs something, so all go back."""
    mod, calib, val, _ = setup
    with caplog.at_level("WARNING", logger="tvm_onednn.quantize.accuracy_control"):
        _, report = tvm_onednn.quantize(
            mod, calib, validation=(val, neg_rel_error), max_drop=0.0, return_report=True
        )
    control = report.accuracy_control
    assert control.met and sorted(control.reverted) == sorted(n for n, _ in control.ranking)
    assert report.num_quantized == 0
    assert "nothing runs in int8" in caplog.text


def test_top1_agreement_with_labels_from_numpy():
    fp32 = [np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[0.3, 0.7]])]
    int8 = [np.array([[0.2, 0.6], [0.1, 0.2]]), np.array([[0.9, 0.1]])]
    assert top1_agreement(int8, fp32) == pytest.approx(1 / 3)
    assert top1_agreement(fp32, fp32) == 1.0
    assert top1_agreement([[a] for a in int8], [[a] for a in fp32]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="2 outputs vs 1"):
        top1_agreement(int8, fp32[:1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_drop": 0.01}, "max_drop needs validation"),
        ({"validation": [1, 2, 3]}, "pair \\(data, metric_fn\\), got list of length 3"),
        ({"validation": "val.npz"}, "pair \\(data, metric_fn\\), got str"),
        ({"validation": ("VAL", top1_agreement)}, "data must be an iterable of batches"),
        ({"validation": ([], top1_agreement)}, "data holds no batch"),
        ({"validation": (["x"], "top1")}, "metric_fn must be callable"),
        ({"validation": "V", "max_drop": -0.1}, "pair"),
        ({"validation": "OK", "max_drop": -0.1}, "max_drop must be a finite number >= 0"),
        ({"validation": "OK", "max_drop": float("nan")}, "max_drop must be a finite number"),
        ({"validation": "OK", "max_drop": True}, "max_drop must be a finite number"),
        ({"validation": "OK", "calib_mode": "none"}, "needs calibrated ranges"),
    ],
)
def test_bad_arguments(setup, kwargs, match):
    mod, calib, val, _ = setup
    if kwargs.get("validation") == "OK":
        kwargs = {**kwargs, "validation": (val, top1_agreement)}
    with pytest.raises(ValueError, match=match):
        tvm_onednn.quantize(mod, calib, **kwargs)


def test_bad_validation_batches_and_metric(setup):
    mod, calib, val, _ = setup
    wrong = [np.zeros((BATCH + 1, 3, SIZE, SIZE), "float32")]
    with pytest.raises(ValueError, match="validation batch 0: batch size \\[3\\], the model takes 2"):
        tvm_onednn.quantize(mod, calib, validation=(wrong, top1_agreement))
    with pytest.raises(ValueError, match="validation batch 0: input 'data' has dtype float64"):
        tvm_onednn.quantize(mod, calib, validation=([val[0].astype("float64")], top1_agreement))
    with pytest.raises(ValueError, match="metric_fn must return a real number, got str"):
        tvm_onednn.quantize(mod, calib, validation=(val, lambda out, ref: "good"))
    with pytest.raises(ValueError, match="metric_fn returned nan"):
        tvm_onednn.quantize(mod, calib, validation=(val, lambda out, ref: float("nan")))
