"""int8 latency/throughput: tvm-onednn int8 vs its fp32, ONNX Runtime int8 and OpenVINO int8.

    python benchmarks/bench_int8.py --models resnet18,resnet50 --batches 1,16 --rounds 5

Every int8 system calibrates on the same inputs: ``--calib-batches`` batches of augmented
crops of real photos (``imagenet_crops``, seed 0). The timed input is another batch of crops
(seed 1), shared by all systems. Timing is interleaved round-robin in one process (see
``harness.py``); output differences are relative to tvm-onednn fp32.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from bench_fp32 import MODELS
from cli import add_common_arguments, prepare, run_all
from harness import Runner, System, Workload, parse_list
from systems import OpenVinoSystem, TvmSystem, ort_session


@functools.cache
def _crops(n: int, seed: int, size: int) -> np.ndarray:
    from tvm_onednn.models import imagenet_crops

    return imagenet_crops(n, seed=seed, size=size)[0]


def calibration_batches(workload: Workload, num_batches: int) -> list[dict[str, np.ndarray]]:
    """The calibration set of every int8 system: ``num_batches`` input dicts of crops."""
    ((name, x),) = workload.inputs.items()
    crops = _crops(num_batches * workload.batch, 0, x.shape[-1])
    return [{name: crops[i * workload.batch : (i + 1) * workload.batch]}
            for i in range(num_batches)]  # fmt: skip


class TvmOnednnInt8System(TvmSystem):
    """``tvm_onednn.quantize`` (``calib_mode``) then ``tvm.compile(..., "onednn")``."""

    def __init__(self, target: dict[str, Any], calib_batches: int, calib_mode: str) -> None:
        super().__init__("tvm-onednn-int8", target, "onednn", peer=False)
        self.calib_batches, self.calib_mode = calib_batches, calib_mode

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "calib_mode": self.calib_mode, "calib_batches": self.calib_batches,
        }  # fmt: skip

    def module(self, workload: Workload) -> Any:
        """The model imported by ``tvm_onednn.from_onnx``, quantized on the calibration set."""
        import tvm_onednn

        shapes = {name: list(x.shape) for name, x in workload.inputs.items()}
        mod = tvm_onednn.from_onnx(workload.model, shapes)
        calib = calibration_batches(workload, self.calib_batches)
        return tvm_onednn.quantize(mod, calib, calib_mode=self.calib_mode)


class OnnxRuntimeInt8System(System):
    """``quant_pre_process`` then ``onnxruntime.quantization.quantize_static``: QDQ,
    per-channel s8 weights, u8 activations, MinMax; the CPU provider as ``OnnxRuntimeSystem``."""

    name = "onnxruntime-int8"

    def __init__(self, calib_batches: int) -> None:
        self.calib_batches = calib_batches

    def settings(self) -> dict[str, Any]:
        return {"format": "QDQ", "per_channel": True, "activation_type": "QUInt8",
                "weight_type": "QInt8", "calibrate_method": "MinMax",
                "calib_batches": self.calib_batches}  # fmt: skip

    def build(self, workload: Workload, threads: int) -> Runner:
        from onnxruntime import quantization as q
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(q.CalibrationDataReader):
            def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
                self.batches = iter(batches)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        with tempfile.TemporaryDirectory() as tmp:
            src, pre, dst = (Path(tmp, f"{n}.onnx") for n in ("fp32", "pre", "int8"))
            src.write_bytes(workload.model.SerializeToString())
            # ORT's recommended first step: shape inference and graph optimization (folds
            # BatchNorm into Conv, so it is not quantized on its own).
            quant_pre_process(str(src), str(pre))
            q.quantize_static(
                str(pre), str(dst), Reader(calibration_batches(workload, self.calib_batches)),
                quant_format=q.QuantFormat.QDQ, per_channel=True,
                activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax,
            )  # fmt: skip
            session = ort_session(str(dst), threads)
        feeds = dict(workload.inputs)
        return lambda: session.run(None, feeds)[0]


class OpenVinoInt8System(OpenVinoSystem):
    """``nncf.quantize`` (post-training, default preset: symmetric int8) of the converted
    OpenVINO model, then the CPU plugin configured as ``OpenVinoSystem`` (f32 hint)."""

    def __init__(self, calib_batches: int) -> None:
        super().__init__("openvino-int8", "LATENCY")
        self.calib_batches = calib_batches

    def model(self, workload: Workload) -> tuple[Any, dict[str, Any]]:
        """The converted model quantized by ``nncf.quantize`` on the calibration set."""
        import nncf

        model, _ = super().model(workload)
        calib = calibration_batches(workload, self.calib_batches)
        dataset = nncf.Dataset(calib, lambda item: list(item.values()))
        quantized = nncf.quantize(model, dataset, subset_size=len(calib))
        return quantized, {"nncf_subset_size": len(calib), "calib_batches": self.calib_batches}


SYSTEM_NAMES = ("tvm-onednn-int8", "tvm-onednn", "onnxruntime-int8", "openvino-int8")


def make_systems(names: list[str], mcpu: str, calib_batches: int, calib_mode: str) -> list[System]:
    """Instantiate the int8 benchmark's systems by name (see ``SYSTEM_NAMES``)."""
    target = {"kind": "llvm", "mcpu": mcpu}
    factories = {
        "tvm-onednn-int8": lambda: TvmOnednnInt8System(target, calib_batches, calib_mode),
        "tvm-onednn": lambda: TvmSystem("tvm-onednn", target, "onednn", False),
        "onnxruntime-int8": lambda: OnnxRuntimeInt8System(calib_batches),
        "openvino-int8": lambda: OpenVinoInt8System(calib_batches),
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {list(SYSTEM_NAMES)}")
    return [factories[n]() for n in names]


def make_workload(name: str, batch: int) -> Workload:
    """The model at ``batch``; its input is a batch of photo crops (seed 1, not calibration's)."""
    model, _ = MODELS[name](batch)
    initializers = {init.name for init in model.graph.initializer}
    (value,) = [v for v in model.graph.input if v.name not in initializers]
    size = value.type.tensor_type.shape.dim[-1].dim_value
    return Workload(name, batch, model, {value.name: _crops(batch, 1, size)})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, MODELS, SYSTEM_NAMES, "bench-results/int8.json")
    p.add_argument("--calib-batches", type=int, default=10, help="calibration batches (10)")
    p.add_argument("--calib-mode", default="auto",
                   help="tvm-onednn's calib_mode (auto, the library's default: entropy for conv "
                   "nets)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models, mcpu = prepare(args, MODELS)
    systems = make_systems(parse_list(args.systems), mcpu, args.calib_batches, args.calib_mode)
    return run_all(args, "int8", models, mcpu, systems, make_workload, reference="tvm-onednn")


if __name__ == "__main__":
    sys.exit(main())
