"""fp32 latency/throughput: tvm-onednn vs TVM's default build, ONNX Runtime, OpenVINO, PyTorch.

    python benchmarks/bench_fp32.py --models resnet18,resnet50 --batches 1,16 --rounds 5

Every system runs in this one process on the same inputs with the same thread count; timing is
interleaved round-robin (see ``harness.py``). Results go to a JSON file and a table on stdout.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

import numpy as np
import onnx
from cli import add_common_arguments, prepare, run_all
from harness import Workload, parse_list
from systems import make_systems

DEFAULT_SYSTEMS = (
    "tvm-default",
    "tvm-onednn",
    "onnxruntime",
    "openvino",
    "torch-eager",
)


def _resnet(
    depth: int,
) -> Callable[[int], tuple[onnx.ModelProto, Callable[[], object] | None]]:
    def build(batch: int) -> tuple[onnx.ModelProto, Callable[[], object] | None]:
        from tvm_onednn.models import resnet_onnx, resnet_torch

        model = resnet_onnx(depth, batch=batch)
        return model, lambda: resnet_torch(depth, model)

    return build


def _mobilenet_v2(batch: int) -> tuple[onnx.ModelProto, Callable[[], object] | None]:
    from tvm_onednn.models import mobilenet_v2_onnx, mobilenet_v2_torch

    return mobilenet_v2_onnx(batch=batch), mobilenet_v2_torch


def _small_resnet(batch: int) -> tuple[onnx.ModelProto, Callable[[], object] | None]:
    from tvm_onednn.models import small_resnet_onnx

    return small_resnet_onnx(batch=batch), None


#: model name -> (batch -> (ONNX model, torch module factory or None))
MODELS: dict[str, Callable[[int], tuple[onnx.ModelProto, Callable[[], object] | None]]] = {
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "mobilenet_v2": _mobilenet_v2,
    "small_resnet": _small_resnet,
}


def make_workload(name: str, batch: int, seed: int) -> Workload:
    """The model at ``batch`` with seeded N(0, 1) inputs of its declared shapes."""
    model, torch_module = MODELS[name](batch)
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name not in initializers:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            inputs[value.name] = rng.standard_normal(shape, dtype=np.float32)
    return Workload(name, batch, model, inputs, torch_module)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, MODELS, DEFAULT_SYSTEMS, "bench-results/fp32.json")
    p.add_argument(
        "--tvm-default-max-batch",
        type=int,
        default=1,
        help="skip tvm-default above this batch (it is ~100x slower); 0: no limit",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models, mcpu = prepare(args, MODELS)
    systems = make_systems(parse_list(args.systems), mcpu, args.tvm_default_max_batch or None)
    workload = functools.partial(make_workload, seed=args.seed)
    return run_all(args, "fp32", models, mcpu, systems, workload, reference="onnxruntime")


if __name__ == "__main__":
    sys.exit(main())
