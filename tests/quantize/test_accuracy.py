"""int8 accuracy on real data: a small residual CNN trained in-process on sklearn's digits.

The CNN (conv-bn-relu, a residual block with an add, global pool, dense) is trained with
torch for a few seconds on 8x8 handwritten digits, exported to ONNX and compiled in float32
and, after ``tvm_onednn.quantize`` (naive and entropy), in int8 on the ``"onednn"``
pipeline; int8 must keep the float32 labelled test accuracy (see ``MAX_LOSS_PT``) and
really run as int8 oneDNN composites.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import tvm_onednn
from tvm_onednn.testing import Runner, build

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")

BATCH = 32
CALIB_BATCHES = 10
# Issue 3 asks for <= 0.5 pt: the better of naive and entropy must meet it. Measured on an AVX2
# CPU (pair-bounded / halved weights, see quantization.md) over the 517 test digits (one digit
# = 0.19 pt): naive loses 0.39 pt (2 digits), entropy 0.58 pt (3). Each mode alone may lose
# MAX_LOSS_PT: that measurement plus two digits of margin.
BEST_MAX_LOSS_PT = 0.5
MAX_LOSS_PT = 1.0
MODES = ("naive", "entropy")


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of the 1797 digits, images scaled to [0, 1], shape (N, 1, 8, 8)."""
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n_train = 1280  # 40 batches of 32; the remaining 517 are the test set
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _residual_cnn():
    nn = torch.nn

    class ResidualCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.conv1 = nn.Sequential(
                nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.conv2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(self.conv2(self.conv1(x)) + x)
            return self.fc(torch.flatten(self.pool(x), 1))

    return ResidualCNN()


def _train(x: np.ndarray, y: np.ndarray, epochs: int = 12):
    """Adam on the training set; one thread (tiny tensors: more threads only add contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(x, y, epochs)
    finally:
        torch.set_num_threads(threads)


def _fit(x: np.ndarray, y: np.ndarray, epochs: int):
    torch.manual_seed(0)
    model = _residual_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def _to_onnx(model) -> bytes:
    buf = io.BytesIO()
    example = torch.zeros(BATCH, 1, 8, 8)
    torch.onnx.export(model, (example,), buf, input_names=["data"], output_names=["logits"],
                      opset_version=17, dynamo=False)  # fmt: skip
    return buf.getvalue()


def _batches(x: np.ndarray) -> list[np.ndarray]:
    """``x`` in full batches of ``BATCH``; the tail is zero-padded (the module is static)."""
    pad = (-len(x)) % BATCH
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return [x[i : i + BATCH] for i in range(0, len(x), BATCH)]


def _accuracy(run: Runner, x: np.ndarray, y: np.ndarray) -> float:
    logits = np.concatenate([run(b) for b in _batches(x)])[: len(y)]
    return float(np.mean(logits.argmax(axis=1) == y))


@pytest.fixture(scope="module")
def trained():
    """(float32 module, calibration batches, test images, test labels, fp32 test accuracy)."""
    import onnx

    x_train, y_train, x_test, y_test = _digits()
    model = _train(x_train, y_train)
    mod = tvm_onednn.from_onnx(onnx.load_from_string(_to_onnx(model)))
    calib = [{"data": b} for b in _batches(x_train)[:CALIB_BATCHES]]
    fp32 = _accuracy(Runner(build(mod)), x_test, y_test)
    return mod, calib, x_test, y_test, fp32


def test_fp32_model_learned(trained):
    *_, fp32 = trained
    assert fp32 >= 0.93, f"fp32 test accuracy {fp32:.3f}: training failed"


@pytest.fixture(scope="module")
def int8_losses(trained):
    """{calib_mode: (int8 accuracy, loss in points, int8 composites)}."""
    mod, calib, x_test, y_test, fp32 = trained
    results = {}
    for calib_mode in MODES:
        qmod = tvm_onednn.quantize(mod, calib, calib_mode=calib_mode)
        composites = tvm_onednn.offload_summary(qmod).composites
        int8 = [name for name in composites if name.startswith("onednn.q")]
        acc = _accuracy(Runner(build(qmod)), x_test, y_test)
        results[calib_mode] = (acc, 100 * (fp32 - acc), int8)
        print(f"{calib_mode}: fp32 {fp32:.4f} int8 {acc:.4f} loss {100 * (fp32 - acc):+.2f} pt")
    return results


@pytest.mark.parametrize("calib_mode", MODES)
def test_int8_runs_as_onednn_int8_composites(int8_losses, calib_mode):
    *_, int8 = int8_losses[calib_mode]
    for kind in ("onednn.qconv2d_bias_add", "onednn.qconv2d", "onednn.qmatmul"):  # residual too
        assert any(n.startswith(kind) for n in int8), f"no {kind}* offloaded: {int8}"


@pytest.mark.parametrize("calib_mode", MODES)
def test_int8_accuracy(trained, int8_losses, calib_mode):
    acc, loss_pt, _ = int8_losses[calib_mode]
    assert loss_pt <= MAX_LOSS_PT, f"int8 {calib_mode} {acc:.4f} vs fp32 {trained[-1]:.4f}"


def test_best_calibration_loses_at_most_half_a_point(int8_losses):
    losses = {mode: round(loss, 2) for mode, (_, loss, _) in int8_losses.items()}
    assert min(losses.values()) <= BEST_MAX_LOSS_PT, f"loss in points: {losses}"
