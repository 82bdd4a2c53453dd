"""The bundled end-to-end job: a small ResNet-style ONNX model, TVM default vs oneDNN."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .byoc import OffloadSummary, offload_summary
from .frontend import from_onnx
from .models.resnet import small_resnet_onnx
from .testing import Runner, build
from .timing import median_seconds


@dataclass
class DemoReport:
    summary: OffloadSummary
    tvm_seconds: float
    onednn_seconds: float
    max_abs_error: float
    max_abs_output: float

    @property
    def speedup(self) -> float:
        return self.tvm_seconds / self.onednn_seconds

    def __str__(self) -> str:
        return "\n".join(
            [
                str(self.summary),
                f"TVM default build: {self.tvm_seconds * 1e3:9.3f} ms (median)",
                f"oneDNN pipeline:   {self.onednn_seconds * 1e3:9.3f} ms (median)",
                f"speedup over TVM default: {self.speedup:.1f}x",
                f"max |error| vs TVM default: {self.max_abs_error:.2e} "
                f"(outputs up to {self.max_abs_output:.2f})",
            ]
        )


def run_demo(batch: int = 1, image_size: int = 32, repeats: int = 20, seed: int = 0) -> DemoReport:
    """Build the bundled model both ways, run both on one random input, time both."""
    model = small_resnet_onnx(batch=batch, image_size=image_size)
    mod = from_onnx(model)
    x = np.random.default_rng(seed).standard_normal((batch, 3, image_size, image_size))
    x = x.astype("float32")
    reference = Runner(build(mod, pipeline="default"))
    onednn = Runner(build(mod, pipeline="onednn"))
    expected, actual = reference(x), onednn(x)
    return DemoReport(
        summary=offload_summary(mod),
        tvm_seconds=median_seconds(lambda: reference(x), repeats=max(3, repeats // 4)),
        onednn_seconds=median_seconds(lambda: onednn(x), repeats=repeats),
        max_abs_error=float(np.abs(actual - expected).max()),
        max_abs_output=float(np.abs(expected).max()),
    )
