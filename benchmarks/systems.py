"""The inference engines compared by the benchmarks, all fp32 and all given the same threads."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from harness import Runner, System, Workload


def prepare_process(threads: int) -> list[str]:
    """Process-wide thread settings; call before any TVM kernel runs. Returns warnings.

    TVM sizes its thread pool from ``TVM_NUM_THREADS``, else from half the logical CPUs on
    x86 (it assumes hyper-threading): 1 thread on a 2-vCPU VM. Creating that pool also pins
    the calling (main) thread to the pool's cores, and every thread another runtime starts
    afterwards inherits the mask. Setting TVM_NUM_THREADS to the full count avoids both.
    """
    warnings = []
    current = os.environ.get("TVM_NUM_THREADS")
    if current is None:
        os.environ["TVM_NUM_THREADS"] = str(threads)
    elif current != str(threads):
        warnings.append(f"TVM_NUM_THREADS={current} overrides --threads {threads} for TVM")
    return warnings


def host_mcpu() -> str:
    """LLVM's name for this machine's CPU (e.g. ``sapphirerapids``, ``znver3``)."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


class TvmSystem(System):
    """TVM Relax: ONNX -> ``from_onnx`` (weights bound as constants) -> ``tvm.compile``.

    ``pipeline="default"`` is TVM's untuned default pipeline; ``"onednn"`` is tvm-onednn's,
    registered by ``import tvm_onednn``.
    """

    def __init__(
        self,
        name: str,
        target: dict[str, Any],
        pipeline: str,
        peer: bool,
        max_batch: int | None = None,
    ) -> None:
        self.name, self.target, self.pipeline = name, target, pipeline
        self.peer, self.max_batch = peer, max_batch

    def skip_reason(self, workload: Workload) -> str | None:
        if self.max_batch is not None and workload.batch > self.max_batch:
            return f"batch > {self.max_batch} (too slow; raise --tvm-default-max-batch)"
        return None

    def settings(self) -> dict[str, Any]:
        return {"target": self.target, "relax_pipeline": self.pipeline}

    def module(self, workload: Workload) -> Any:
        """The Relax IRModule to compile: the model imported with static input shapes."""
        from tvm.relax.frontend.onnx import from_onnx

        shapes = {name: list(x.shape) for name, x in workload.inputs.items()}
        return from_onnx(workload.model, shape_dict=shapes, keep_params_in_input=False)

    def build(self, workload: Workload, threads: int) -> Runner:
        import tvm
        from tvm import relax

        if self.pipeline == "onednn":
            import tvm_onednn

            tvm_onednn.set_num_threads(threads)  # oneDNN's OpenMP and TVM's pool
        # TVM's own pool is sized by TVM_NUM_THREADS (see prepare_process).
        mod = self.module(workload)
        executable = tvm.compile(mod, tvm.target.Target(self.target), relax_pipeline=self.pipeline)
        vm = relax.VirtualMachine(executable, tvm.cpu())
        main = vm["main"]
        args = [tvm.runtime.tensor(x, tvm.cpu()) for x in workload.inputs.values()]

        def run() -> np.ndarray:
            out = main(*args)
            return (out if hasattr(out, "numpy") else out[0]).numpy()

        return run


def ort_session(model: bytes | str, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``model`` (bytes or a path): all graph optimizations,
    sequential execution, ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxRuntimeSystem(System):
    """ONNX Runtime CPU provider, all graph optimizations, ``threads`` intra-op threads."""

    name = "onnxruntime"

    def __init__(self) -> None:
        self._settings: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        return self._settings

    def build(self, workload: Workload, threads: int) -> Runner:
        session = ort_session(workload.model.SerializeToString(), threads)
        self._settings = {
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "intra_op_num_threads": threads,
            "providers": session.get_providers(),
        }
        feeds = dict(workload.inputs)
        return lambda: session.run(None, feeds)[0]


class OpenVinoSystem(System):
    """OpenVINO CPU plugin, f32 forced, one stream of ``threads`` threads, one request.

    Without ``INFERENCE_PRECISION_HINT=f32`` the CPU plugin silently runs bf16 on CPUs with
    AMX / AVX512-BF16. ``hint`` is the PERFORMANCE_HINT; NUM_STREAMS is pinned to 1 either way,
    since a THROUGHPUT hint would otherwise split the cores into several streams of which a
    single synchronous request uses one.
    """

    def __init__(self, name: str = "openvino", hint: str = "LATENCY") -> None:
        self.name, self.hint = name, hint
        self._settings: dict[str, Any] = {"PERFORMANCE_HINT": hint}

    def settings(self) -> dict[str, Any]:
        return self._settings

    def model(self, workload: Workload) -> tuple[Any, dict[str, Any]]:
        """The OpenVINO model to compile, and settings to report beside the plugin's."""
        import openvino as ov

        return ov.convert_model(io.BytesIO(workload.model.SerializeToString())), {}

    def build(self, workload: Workload, threads: int) -> Runner:
        import openvino as ov

        model, extra_settings = self.model(workload)
        config = {
            "INFERENCE_PRECISION_HINT": "f32",  # what stays float (or all of it) runs f32
            "PERFORMANCE_HINT": self.hint,
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
        }
        compiled = ov.Core().compile_model(model, "CPU", config)
        self._settings = {
            key: _property_text(compiled.get_property(key))
            for key in (*config, "ENABLE_CPU_PINNING", "EXECUTION_MODE_HINT")
        } | extra_settings
        request = compiled.create_infer_request()
        feeds = list(workload.inputs.values())

        def run() -> np.ndarray:
            request.infer(feeds, share_inputs=True)
            return request.get_output_tensor(0).data.copy()

        return run


def _property_text(value: Any) -> str:
    """OpenVINO property value as text (``ov.Type`` prints as ``<Type: 'float32'>``)."""
    return value.to_string() if hasattr(value, "to_string") else str(value)


class TorchEagerSystem(System):
    """PyTorch eager (``inference_mode``), ``torch.set_num_threads(threads)``."""

    name = "torch-eager"

    def skip_reason(self, workload: Workload) -> str | None:
        return None if workload.torch_module else "no PyTorch module for this model"

    def settings(self) -> dict[str, Any]:
        return {"mode": "eager", "inference_mode": True}

    def build(self, workload: Workload, threads: int) -> Runner:
        import torch

        assert workload.torch_module is not None
        torch.set_num_threads(threads)
        module = workload.torch_module()
        args = [torch.from_numpy(x) for x in workload.inputs.values()]

        def run() -> np.ndarray:
            with torch.inference_mode():
                return module(*args).numpy()

        return run


SYSTEM_NAMES = (
    "tvm-default",
    "tvm-onednn",
    "onnxruntime",
    "openvino",
    "openvino-throughput",
    "torch-eager",
)


def make_systems(names: list[str], mcpu: str, tvm_default_max_batch: int | None) -> list[System]:
    """Instantiate systems by name (see ``SYSTEM_NAMES``) for an LLVM ``mcpu``."""
    target = {"kind": "llvm", "mcpu": mcpu}
    factories = {
        "tvm-default": lambda: TvmSystem(
            "tvm-default", target, "default", True, tvm_default_max_batch
        ),
        "tvm-onednn": lambda: TvmSystem("tvm-onednn", target, "onednn", False),
        "onnxruntime": OnnxRuntimeSystem,
        "openvino": lambda: OpenVinoSystem("openvino", "LATENCY"),
        "openvino-throughput": lambda: OpenVinoSystem("openvino-throughput", "THROUGHPUT"),
        "torch-eager": TorchEagerSystem,
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {list(SYSTEM_NAMES)}")
    return [factories[n]() for n in names]
