"""int8 MobileNetV3-small-style network (HardSwish, SE with HardSigmoid, depthwise convs).

Issue 10's "done when": a HardSwish model quantizes, its HardSwish chains run as int8
oneDNN composites, and int8 top-1 agrees with float32 on >= 90 % of held-out inputs.

The network is built with torch (random but deterministic weights, then 40 deterministic
training steps telling the bundled photos apart, so that its logits are peaked like a real
classifier's; BatchNorm running statistics averaged over the training batches, with random
affine terms, so that BN folding has real work), exported to ONNX (opset 17) and imported
with ``tvm_onednn.from_onnx``. Inputs are augmented 64x64 crops of the real photos of
``tvm_onednn.models.load_photos``: training from seed 2, calibration (16 crops) from seed 0,
evaluation on 50 crops from seed 1. The evaluation crops must not all get the same class,
or agreement means nothing.
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest

import tvm_onednn
from tvm_onednn.testing import Runner, build

torch = pytest.importorskip("torch")
nn = torch.nn

SIZE = 64
PHOTO_SIZE = 80  # crops of SIZE are cut from photos resized to this
CLASSES = 10
TRAIN_STEPS = 40
CALIB_CROPS = 16
EVAL_CROPS = 50
MIN_TOP1_AGREEMENT = 0.9


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise kxk -> [SE] -> project 1x1 (+ input when shapes allow)."""

    def __init__(self, cin, expanded, cout, kernel, stride, se, act):
        super().__init__()
        layers = []
        if expanded != cin:
            layers += [nn.Conv2d(cin, expanded, 1, bias=False), nn.BatchNorm2d(expanded), act()]
        layers += [
            nn.Conv2d(expanded, expanded, kernel, stride, kernel // 2, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded),
            act(),
        ]
        if se:
            layers.append(SqueezeExcite(expanded, max(8, expanded // 4)))
        layers += [nn.Conv2d(expanded, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    def __init__(self, classes: int = CLASSES):
        super().__init__()
        hs, relu = nn.Hardswish, nn.ReLU
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False),
            nn.BatchNorm2d(16),
            hs(),
            InvertedResidual(16, 16, 16, 3, 2, True, relu),
            InvertedResidual(16, 72, 24, 3, 2, False, relu),
            InvertedResidual(24, 88, 24, 3, 1, False, relu),
            InvertedResidual(24, 96, 40, 5, 2, True, hs),
            InvertedResidual(40, 120, 40, 5, 1, True, hs),
            nn.Conv2d(40, 144, 1, bias=False),
            nn.BatchNorm2d(144),
            hs(),
        )
        self.classifier = nn.Sequential(nn.Linear(144, 128), hs(), nn.Linear(128, classes))

    def forward(self, x):
        x = self.features(x).mean((2, 3))
        return self.classifier(x)


def _photos() -> list[np.ndarray]:
    """The bundled photos (``tvm_onednn.models.load_photos``), resized once to 80x80."""
    try:
        from skimage.transform import resize

        from tvm_onednn.models.images import load_photos
    except ImportError as err:  # scikit-image is a test dependency; say so if it is missing
        pytest.skip(f"photos need scikit-image: {err}")
    return [
        resize(image, (PHOTO_SIZE, PHOTO_SIZE), order=1, anti_aliasing=True)
        for image, _ in load_photos().values()
    ]


def _crops(photos: list[np.ndarray], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 64x64 crops (flips, brightness/contrast jitter), normalized NCHW, and
    the index of the photo each comes from (the training label)."""
    from tvm_onednn.models.images import normalize

    rng = np.random.default_rng(seed)
    views, labels = [], []
    for _ in range(n):
        label = int(rng.integers(len(photos)))
        top, left = rng.integers(0, PHOTO_SIZE - SIZE + 1, size=2)
        view = photos[label][top : top + SIZE, left : left + SIZE]
        view = view[:, ::-1] if rng.random() < 0.5 else view
        view = np.clip(view * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1), 0.0, 1.0)
        views.append(normalize(view))
        labels.append(label)
    return np.stack(views).astype("float32"), np.array(labels, np.int64)


def _network(x: np.ndarray, labels: np.ndarray) -> MobileNetV3Small:
    """Deterministic random weights, then a short training on ``(x, labels)``.

    Untrained, the logits of random weights are close to tied (a 10-20 % logit error flips
    the top-1 of a third of the inputs, whatever the quantizer does); a few steps of training
    to tell the photos apart give the peaked logits of a real classifier. BatchNorm running
    statistics are the averages over the training batches, with random affine terms.
    """
    torch.manual_seed(0)
    model = MobileNetV3Small()
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.1, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.momentum = None  # running statistics: the average over all training batches
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(TRAIN_STEPS):
        batch = torch.randint(0, len(x), (32,), generator=order).numpy()
        loss = nn.functional.cross_entropy(
            model(torch.from_numpy(x[batch])), torch.from_numpy(labels[batch])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _onnx(model: nn.Module) -> onnx.ModelProto:
    buf = io.BytesIO()
    # dynamo=False: torch's default exporter (dynamo) needs onnxscript, which is not installed.
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
        buf,
        opset_version=17,
        input_names=["data"],
        output_names=["logits"],
        dynamo=False,
    )
    return onnx.load_from_string(buf.getvalue())


@pytest.fixture(scope="module")
def mobilenet():
    """(float32 module, calibration batches, evaluation crops, float32 logits, torch logits)."""
    photos = _photos()
    model = _network(*_crops(photos, 512, seed=2))
    mod = tvm_onednn.from_onnx(_onnx(model))
    calib = [{"data": x[None]} for x in _crops(photos, CALIB_CROPS, seed=0)[0]]
    eval_x, _ = _crops(photos, EVAL_CROPS, seed=1)
    run = Runner(build(mod))
    fp32 = np.concatenate([run(x[None]) for x in eval_x])
    with torch.no_grad():
        reference = model(torch.from_numpy(eval_x)).numpy()
    return mod, calib, eval_x, fp32, reference


def test_float32_import_matches_torch_and_predictions_vary(mobilenet):
    mod, _, _, fp32, reference = mobilenet
    np.testing.assert_allclose(fp32, reference, rtol=1e-3, atol=1e-3 * np.abs(reference).max())
    assert len(set(fp32.argmax(axis=1).tolist())) >= 3, "evaluation crops all get one class"
    composites = tvm_onednn.offload_summary(mod).composites
    assert any("hardswish" in name for name in composites), composites


@pytest.mark.parametrize("calib_mode", ["naive", "entropy"])
def test_int8_hardswish_network(mobilenet, calib_mode):
    mod, calib, eval_x, fp32, _ = mobilenet
    # float_stem=False: the stem (a HardSwish conv feeding a depthwise conv) is int8 too.
    qmod, report = tvm_onednn.quantize(
        mod, calib, calib_mode=calib_mode, float_stem=False, return_report=True
    )
    # Every conv and both classifier matmuls are int8; the HardSwish chains run as int8
    # oneDNN composites (not as TVM kernels around them).
    chains = [l for l in report.layers if l.kind in ("conv2d", "matmul")]
    assert all(l.quantized for l in chains), report.summary()
    assert report.backend == "onednn" and report.batches == CALIB_CROPS
    hardswish_layers = [l for l in chains if "hardswish" in (l.int8_chain or "")]
    # stem, the expand + depthwise convs of the last two blocks, the last 1x1 conv, fc1
    assert len(hardswish_layers) == 7, str(report)
    composites = tvm_onednn.offload_summary(qmod).composites
    int8_hardswish = {
        n: c for n, c in composites.items() if n.startswith("onednn.q") and "hardswish" in n
    }
    assert sum(int8_hardswish.values()) == len(hardswish_layers), composites
    assert not any(n.startswith("onednn.conv2d") for n in composites), composites

    run = Runner(build(qmod))
    int8 = np.concatenate([run(x[None]) for x in eval_x])
    agreement = float(np.mean(int8.argmax(axis=1) == fp32.argmax(axis=1)))
    error = float(np.abs(int8 - fp32).mean() / np.abs(fp32).mean())
    print(f"{calib_mode}: top-1 agreement {agreement:.2f}, mean |logit error| {error:.3f}")
    assert agreement >= MIN_TOP1_AGREEMENT, f"{calib_mode}: top-1 agreement {agreement}"
