"""fp32 latency/throughput: tvm-onednn vs TVM's default build, ONNX Runtime, OpenVINO, PyTorch.

    python benchmarks/bench_fp32.py --models resnet18,resnet50 --batches 1,16 --rounds 5

Every system runs in this one process on the same inputs with the same thread count; timing is
interleaved round-robin (see ``harness.py``). Results go to a JSON file and a table on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from harness import (
    Result,
    Workload,
    format_table,
    machine_info,
    parse_list,
    run_workload,
    write_json,
)
from systems import SYSTEM_NAMES, host_mcpu, make_systems, prepare_process

DEFAULT_SYSTEMS = ("tvm-default", "tvm-onednn", "onnxruntime", "openvino", "torch-eager")


def _resnet(depth: int) -> Callable[[int], tuple[onnx.ModelProto, Callable[[], object] | None]]:
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
    p.add_argument("--models", default="resnet18,resnet50", help=f"from {sorted(MODELS)}")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help=f"from {SYSTEM_NAMES}")
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed calls per system first (default 3)"
    )
    p.add_argument(
        "--block-seconds",
        type=float,
        default=2.0,
        help="time budget of one system's block of calls per round (default 2)",
    )
    p.add_argument("--max-iters", type=int, default=20, help="max calls per block")
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for every system (default: CPUs this process may use)",
    )
    p.add_argument("--mcpu", default="auto", help="LLVM -mcpu for TVM (default: this host's)")
    p.add_argument(
        "--tvm-default-max-batch",
        type=int,
        default=1,
        help="skip tvm-default above this batch (it is ~100x slower); 0: no limit",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results/fp32.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models, batches = parse_list(args.models), [int(b) for b in parse_list(args.batches)]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    for warning in prepare_process(args.threads):
        print(f"warning: {warning}", file=sys.stderr)
    host = host_mcpu()
    mcpu = host if args.mcpu == "auto" else args.mcpu
    if mcpu != host:
        print(
            f"warning: --mcpu {mcpu} is not this host's CPU ({host}); TVM code may use "
            "instructions this machine lacks",
            file=sys.stderr,
        )
    systems = make_systems(parse_list(args.systems), mcpu, args.tvm_default_max_batch or None)
    meta = {
        "benchmark": "fp32",
        "argv": sys.argv,
        "options": {k: str(v) for k, v in vars(args).items()} | {"mcpu": mcpu},
    }
    results: list[Result] = []
    for name in models:
        for batch in batches:
            print(f"\n[{name} batch {batch}]", flush=True)
            workload = make_workload(name, batch, args.seed)
            results += run_workload(
                workload,
                systems,
                threads=args.threads,
                rounds=args.rounds,
                warmup=args.warmup,
                block_seconds=args.block_seconds,
                max_iters=args.max_iters,
                reference="onnxruntime",
                log=lambda line: print(line, flush=True),
            )
            # After every workload, so partial runs survive; machine info last, as the
            # runtimes may have set thread variables on import.
            write_json(args.out, meta | {"machine": machine_info(args.threads)}, results)
    print(format_table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
