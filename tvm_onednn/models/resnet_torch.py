"""torchvision-layout ResNet in PyTorch, loading the weights of a ``resnet_onnx`` model.

``resnet_onnx`` names its initializers like torchvision's state dict, so the ONNX model's
weights load into this module with no renaming. This is both a check that the ONNX graph is
the torchvision architecture and the PyTorch-eager peer for benchmarks. torch is imported
lazily.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import onnx
from onnx import numpy_helper

from .resnet import RESNET_LAYERS, STAGE_PLANES

if TYPE_CHECKING:
    import torch

__all__ = ["resnet_torch"]


@functools.cache
def _module_class() -> type:
    """Define the torch modules on first use (keeps torch an optional import)."""
    from torch import nn

    def conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)

    class Block(nn.Module):
        """BasicBlock (2 convs) or Bottleneck (3 convs, expansion 4, stride on the 3x3)."""

        def __init__(self, cin: int, planes: int, stride: int, bottleneck: bool) -> None:
            super().__init__()
            cout = planes * 4 if bottleneck else planes
            if bottleneck:
                self.conv1, self.bn1 = conv(cin, planes, 1), nn.BatchNorm2d(planes)
                self.conv2, self.bn2 = conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
                self.conv3, self.bn3 = conv(planes, cout, 1), nn.BatchNorm2d(cout)
            else:
                self.conv1, self.bn1 = conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
                self.conv2, self.bn2 = conv(planes, cout, 3), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if hasattr(self, "conv3"):
                out = self.bn3(self.conv3(self.relu(out)))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self, depth: int, num_classes: int) -> None:
            super().__init__()
            blocks, bottleneck = RESNET_LAYERS[depth]
            self.conv1, self.bn1 = conv(3, 64, 7, 2), nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for stage, (n, planes) in enumerate(zip(blocks, STAGE_PLANES, strict=True), start=1):
                layer = []
                for i in range(n):
                    stride = 2 if stage > 1 and i == 0 else 1
                    layer.append(Block(cin, planes, stride, bottleneck))
                    cin = planes * 4 if bottleneck else planes
                setattr(self, f"layer{stage}", nn.Sequential(*layer))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet


def resnet_torch(depth: int, model: onnx.ModelProto) -> torch.nn.Module:
    """Eval-mode torch ResNet-``depth`` carrying the weights of ``resnet_onnx(depth, ...)``.

    ``model`` must keep its BatchNorm nodes (``keep_batchnorm=True``). Every torchvision
    parameter and buffer must be found (except ``num_batches_tracked``), and nothing left over.
    """
    import torch

    if depth not in RESNET_LAYERS:
        raise ValueError(f"depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
    state = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer
    }
    num_classes = state["fc.weight"].shape[0]
    module = _module_class()(depth, num_classes)
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"ONNX weights do not match torchvision resnet{depth}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return module.eval()
