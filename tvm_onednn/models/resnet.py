"""torchvision-structured ResNets written directly as ONNX, with seeded random weights.

Weights use He (fan-in) init. BatchNorm running statistics are not arbitrary: while writing the
graph the builder pushes a small seeded calibration batch (N(0, 1) images, like
ImageNet-normalized input) through the network in numpy and sets each BN's running mean/var to
the measured per-channel statistics of its input, slightly perturbed. gamma/beta are drawn like
those of a trained net, with small gammas on the last BN of each residual branch. Activations
therefore stay O(1) through 50 layers (about half of every ReLU's inputs positive) while every BN
is a non-trivial affine transform, which BN folding and int8 calibration need to be exercised
realistically.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view

from .graph_builder import GraphBuilder

__all__ = ["resnet_onnx", "small_resnet_onnx", "RESNET_LAYERS", "STAGE_PLANES"]

#: Blocks per stage and whether the block is a bottleneck (torchvision's resnet18/34/50).
RESNET_LAYERS: dict[int, tuple[tuple[int, int, int, int], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
}
#: Bottleneck/basic-block width of the four stages.
STAGE_PLANES = (64, 128, 256, 512)

_BN_EPS = 1e-5
_CALIB_BATCH = 2
_CALIB_MAX_SIZE = 112  # calibration resolution cap: keeps ResNet-50 building in ~2 s


def _windows(x: np.ndarray, kernel: int, stride: int, pad: int, value: float) -> np.ndarray:
    """[N, C, H, W] -> strided [N, C, Ho, Wo, k, k] view of the padded input."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=value)
    return sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]


def _conv2d(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Reference NCHW/OIHW convolution with "same"-style padding of kernel // 2."""
    cols = _windows(x, w.shape[-1], stride, w.shape[-1] // 2, 0.0)
    return np.einsum("nchwij,ocij->nohw", cols, w, optimize=True)


def _maxpool(x: np.ndarray) -> np.ndarray:
    return _windows(x, 3, 2, 1, -np.inf).max(axis=(4, 5))


class _ResNetWriter:
    """Writes conv/BN/ReLU units into a GraphBuilder while running a calibration batch.

    Every method takes and returns ``(value_name, activation)``: the ONNX value and the
    numpy activation of the calibration batch at that point of the graph.
    """

    def __init__(self, seed: int, keep_batchnorm: bool) -> None:
        self.g = GraphBuilder(seed)
        self.rng = self.g.rng
        self.keep_batchnorm = keep_batchnorm

    def calibration_input(self, image_size: int) -> tuple[str, np.ndarray]:
        """The graph input and a seeded N(0, 1) calibration batch for it."""
        size = min(image_size, _CALIB_MAX_SIZE)
        shape = (_CALIB_BATCH, 3, size, size)
        return "data", self.rng.standard_normal(shape, dtype=np.float32)

    def conv_bn(
        self,
        x: tuple[str, np.ndarray],
        cout: int,
        kernel: int,
        stride: int,
        prefix: str,
        bn_name: str,
        relu: bool,
        gamma_range: tuple[float, float] = (0.6, 1.2),
    ) -> tuple[str, np.ndarray]:
        """Conv (no bias) + BatchNorm (+ ReLU), or the BN folded into the conv."""
        name, act = x
        cin = act.shape[1]
        w = self.rng.standard_normal((cout, cin, kernel, kernel), dtype=np.float32)
        w *= np.float32(math.sqrt(2.0 / (cin * kernel * kernel)))
        conv = _conv2d(act, w, stride)

        # Running stats = measured batch statistics, perturbed a little; variance shrunk
        # toward the layer average because deep layers see few spatial samples.
        mean = conv.mean(axis=(0, 2, 3), dtype=np.float64)
        var = conv.var(axis=(0, 2, 3), dtype=np.float64)
        var = 0.5 * (var + var.mean())
        running_mean = mean + 0.05 * np.sqrt(var) * self.rng.standard_normal(cout)
        running_var = var * np.exp(self.rng.normal(0.0, 0.1, cout))
        gamma = self.rng.uniform(*gamma_range, cout)
        beta = self.rng.normal(0.0, 0.1, cout)
        scale = gamma / np.sqrt(running_var + _BN_EPS)
        shift = beta - running_mean * scale
        out = conv * scale[None, :, None, None].astype(np.float32)
        out += shift[None, :, None, None].astype(np.float32)

        pad = kernel // 2
        attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
        f32 = np.float32
        if self.keep_batchnorm:
            y = self.g.op("Conv", [name, self.g.const(f"{prefix}.weight", w)], prefix, **attrs)
            bn_inputs = [y] + [
                self.g.const(f"{bn_name}.{k}", v.astype(f32))
                for k, v in (
                    ("weight", gamma),
                    ("bias", beta),
                    ("running_mean", running_mean),
                    ("running_var", running_var),
                )
            ]
            y = self.g.op("BatchNormalization", bn_inputs, bn_name, epsilon=_BN_EPS)
        else:
            w_folded = (w * scale[:, None, None, None]).astype(f32)
            inputs = [name, self.g.const(f"{prefix}.weight", w_folded)]
            inputs.append(self.g.const(f"{prefix}.bias", shift.astype(f32)))
            y = self.g.op("Conv", inputs, prefix, **attrs)
        if relu:
            y = self.g.op("Relu", [y], f"{bn_name}.relu")
            out = np.maximum(out, 0.0)
        return y, out

    def block(
        self, x: tuple[str, np.ndarray], planes: int, stride: int, bottleneck: bool, prefix: str
    ) -> tuple[str, np.ndarray]:
        """A torchvision BasicBlock or Bottleneck (stride on the 3x3 conv, "ResNet v1.5")."""
        cin = x[1].shape[1]
        damped = (0.2, 0.5)  # trained nets have small gammas on the branch's last BN
        p = prefix
        if bottleneck:
            cout = planes * 4
            y = self.conv_bn(x, planes, 1, 1, f"{p}.conv1", f"{p}.bn1", True)
            y = self.conv_bn(y, planes, 3, stride, f"{p}.conv2", f"{p}.bn2", True)
            y = self.conv_bn(y, cout, 1, 1, f"{p}.conv3", f"{p}.bn3", False, damped)
        else:
            cout = planes
            y = self.conv_bn(x, planes, 3, stride, f"{p}.conv1", f"{p}.bn1", True)
            y = self.conv_bn(y, cout, 3, 1, f"{p}.conv2", f"{p}.bn2", False, damped)
        if stride != 1 or cin != cout:
            x = self.conv_bn(x, cout, 1, stride, f"{p}.downsample.0", f"{p}.downsample.1", False)
        out = self.g.op("Add", [y[0], x[0]], f"{p}.add")
        return self.g.op("Relu", [out], f"{p}.relu"), np.maximum(y[1] + x[1], 0.0)

    def maxpool(self, x: tuple[str, np.ndarray]) -> tuple[str, np.ndarray]:
        """3x3 stride-2 pad-1 max pooling."""
        attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        return self.g.op("MaxPool", [x[0]], "maxpool", **attrs), _maxpool(x[1])

    def head(self, x: tuple[str, np.ndarray], num_classes: int) -> str:
        """GlobalAveragePool -> Flatten -> Gemm (transB, nn.Linear's default init)."""
        channels = x[1].shape[1]
        y = self.g.op("GlobalAveragePool", [x[0]], "avgpool")
        y = self.g.op("Flatten", [y], "flatten", axis=1)
        bound = 1.0 / math.sqrt(channels)
        w = self.rng.uniform(-bound, bound, (num_classes, channels)).astype(np.float32)
        b = self.rng.uniform(-bound, bound, num_classes).astype(np.float32)
        fc_w, fc_b = self.g.const("fc.weight", w), self.g.const("fc.bias", b)
        return self.g.op("Gemm", [y, fc_w, fc_b], "logits", transB=1)


def resnet_onnx(
    depth: int,
    batch: int = 1,
    image_size: int = 224,
    num_classes: int = 1000,
    keep_batchnorm: bool = True,
    seed: int = 0,
) -> onnx.ModelProto:
    """torchvision ResNet-``depth`` (18, 34 or 50) as an opset-17 ONNX model.

    Input ``data`` is ``[batch, 3, image_size, image_size]``, output ``logits`` is
    ``[batch, num_classes]``. With ``keep_batchnorm=False`` every BN is folded into its conv
    (the conv gets a bias): the numerically equivalent inference graph.
    """
    if depth not in RESNET_LAYERS:
        raise ValueError(f"depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
    blocks, bottleneck = RESNET_LAYERS[depth]
    w = _ResNetWriter(seed, keep_batchnorm)
    x = w.conv_bn(w.calibration_input(image_size), 64, 7, 2, "conv1", "bn1", True)
    x = w.maxpool(x)
    for stage, (n, planes) in enumerate(zip(blocks, STAGE_PLANES, strict=True), start=1):
        for i in range(n):
            stride = 2 if stage > 1 and i == 0 else 1
            x = w.block(x, planes, stride, bottleneck, f"layer{stage}.{i}")
    logits = w.head(x, num_classes)
    shape = [batch, 3, image_size, image_size]
    return w.g.model([("data", shape)], [(logits, [batch, num_classes])], f"resnet{depth}")


def small_resnet_onnx(
    batch: int = 1,
    image_size: int = 32,
    width: int = 16,
    num_classes: int = 10,
    keep_batchnorm: bool = True,
    seed: int = 0,
) -> onnx.ModelProto:
    """A CIFAR-sized ResNet: conv-BN-ReLU stem, maxpool, two basic blocks, GAP, Gemm.

    The second block doubles the width with stride 2, so it has a downsample conv+BN
    (6 convs in all). Builds in milliseconds; the default model of the README examples.
    """
    w = _ResNetWriter(seed, keep_batchnorm)
    x = w.conv_bn(w.calibration_input(image_size), width, 3, 1, "conv1", "bn1", True)
    x = w.maxpool(x)
    x = w.block(x, width, 1, False, "layer1.0")
    x = w.block(x, 2 * width, 2, False, "layer2.0")
    logits = w.head(x, num_classes)
    shape = [batch, 3, image_size, image_size]
    return w.g.model([("data", shape)], [(logits, [batch, num_classes])], "small_resnet")
