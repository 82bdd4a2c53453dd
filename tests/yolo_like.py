"""A YOLOv8n-style detector in torch (ultralytics' layout), exported to ONNX without ultralytics.

ultralytics (and the torchvision it needs) is not a dependency: the architecture is rebuilt
from its parts, with random weights and no downloads.

Backbone/neck: Conv(+BN+SiLU), C2f (Split/Concat), SPPF (MaxPool), nearest Upsample + Concat.
Detect head: per level cv2 (box, 4*reg_max) and cv3 (cls) branches, DFL (reshape, transpose,
softmax, 1x1 conv with arange weights), anchors made in forward from the feature map shapes
(torch.arange -> Range), dist2bbox, strides concatenated.
"""

from __future__ import annotations

import io
import math
import warnings

import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=False):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats, strides, offset=0.5):
    anchor_points, stride_tensor = [], []
    dtype = feats[0].dtype
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, dtype=dtype) + offset
        sy = torch.arange(end=h, dtype=dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance, anchor_points, dim=1):
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


class Detect(nn.Module):
    def __init__(self, nc, ch, strides=(8.0, 16.0, 32.0), reg_max=16):
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        self.stride = strides
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
            for x in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch
        )
        self.dfl = DFL(reg_max)

    def forward(self, x):
        x = [torch.cat((self.cv2[i](xi), self.cv3[i](xi)), 1) for i, xi in enumerate(x)]
        shape = x[0].shape
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class YoloV8Like(nn.Module):
    """YOLOv8 with width multiplier ``w`` (0.25 = n) and depth multiplier ``d`` (0.33 = n)."""

    def __init__(self, w=0.25, d=0.33, nc=80):
        super().__init__()
        c = lambda x: max(8, int(math.ceil(x * w / 8) * 8))  # noqa: E731
        n = lambda x: max(1, round(x * d))  # noqa: E731
        self.b0 = Conv(3, c(64), 3, 2)
        self.b1 = Conv(c(64), c(128), 3, 2)
        self.b2 = C2f(c(128), c(128), n(3), True)
        self.b3 = Conv(c(128), c(256), 3, 2)
        self.b4 = C2f(c(256), c(256), n(6), True)
        self.b5 = Conv(c(256), c(512), 3, 2)
        self.b6 = C2f(c(512), c(512), n(6), True)
        self.b7 = Conv(c(512), c(1024), 3, 2)
        self.b8 = C2f(c(1024), c(1024), n(3), True)
        self.b9 = SPPF(c(1024), c(1024), 5)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12 = C2f(c(1024) + c(512), c(512), n(3))
        self.h15 = C2f(c(512) + c(256), c(256), n(3))
        self.h16 = Conv(c(256), c(256), 3, 2)
        self.h18 = C2f(c(256) + c(512), c(512), n(3))
        self.h19 = Conv(c(512), c(512), 3, 2)
        self.h21 = C2f(c(512) + c(1024), c(1024), n(3))
        self.detect = Detect(nc, (c(256), c(512), c(1024)))

    def forward(self, x):
        x = self.b2(self.b1(self.b0(x)))
        p3 = self.b4(self.b3(x))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        h12 = self.h12(torch.cat((self.up(p5), p4), 1))
        h15 = self.h15(torch.cat((self.up(h12), p3), 1))
        h18 = self.h18(torch.cat((self.h16(h15), h12), 1))
        h21 = self.h21(torch.cat((self.h19(h18), p5), 1))
        return self.detect([h15, h18, h21])


def yolov8_like_onnx(
    size: int = 160,
    batch: int = 1,
    w: float = 0.25,
    d: float = 0.33,
    nc: int = 80,
    dynamic_batch: bool = False,
    opset: int = 17,
    seed: int = 0,
):
    """Serialized ONNX bytes of a randomly initialised (BatchNorm statistics too) model.

    Exported with the TorchScript exporter (``dynamo=False``: the torch.export-based one
    needs onnxscript). With ``dynamic_batch`` the batch axis is symbolic, which leaves Shape,
    Range, ConstantOfShape... chains in the graph; even a static export keeps one
    Shape -> Gather chain (``x[0].shape[0]``) feeding the box ``chunk`` (Slice).
    """
    torch.manual_seed(seed)
    model = YoloV8Like(w, d, nc).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    x = torch.randn(batch, 3, size, size)
    buf = io.BytesIO()
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "output0": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, (x,), buf, input_names=["images"], output_names=["output0"],
            opset_version=opset, dynamo=False, **kwargs,
        )  # fmt: skip
    return buf.getvalue()
