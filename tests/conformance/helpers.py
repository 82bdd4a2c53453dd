"""Shared machinery of the conformance suite (issue 10).

The rule under test: the ``"onednn"`` relax pipeline must never turn a model that TVM's
``"default"`` pipeline compiles and runs correctly into one that fails or differs, and
``tvm_onednn.quantize(..., calib_mode="naive")`` must never raise on such a model and its
int8 build must run.

Everything that both the fp32 and the int8 tests of a case need (the imported module, the
default-pipeline verdict) is computed once per session and cached here, so the suite
compiles each case with ``"default"`` exactly once. The default-pipeline verdicts and the
light models' int8 builds are computed by a worker process started when collection ends
(``conftest.py``), in test order, while this process compiles with ``"onednn"``;
``CONFORMANCE_WORKERS=0`` computes them inline instead (the default on one core).

Outcomes are recorded in :data:`RESULTS` (``case -> {stage: message}``) and summarised
by ``conftest.py`` at the end of the session: skip reasons counted, failures grouped by
stage and first error line, int8 cosine similarities. ``CONFORMANCE_REPORT=<path>``
also writes them as JSON.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_onednn
from tvm_onednn.target import host_target_spec

# Ops the plugin pattern-matches, offloads or rewrites (patterns, Sum/Clip/Gelu
# canonicalization, BatchNorm folding, pool/eltwise/binary post-ops, layer norm,
# softmax...). A node test case is selected when its graph holds at least one of them.
PLUGIN_OPS = frozenset(
    {
        "Conv", "ConvTranspose", "Gemm", "MatMul",
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
        "BatchNormalization",
        "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish", "HardSigmoid",
        "Gelu", "Mish", "Elu", "Softplus", "Erf", "Pow", "Sqrt",
        "Add", "Sum", "Mul", "Div", "Sub",
        "Concat", "Reshape", "Flatten", "Transpose",
        "Softmax", "LayerNormalization",
    }
)  # fmt: skip

# Ops that make a case an int8 candidate: quantize() has something to quantize.
QUANTIZABLE_OPS = frozenset({"Conv", "Gemm", "MatMul"})

# Stages, in the order a case goes through them (used in messages and the summary).
STAGES = (
    "import",
    "onednn compile",
    "onednn run",
    "onednn numerics",
    "quantize",
    "int8 build",
    "int8 run",
    "int8 output",
)

RESULTS: dict[str, dict[str, str]] = {}  # "<test>[<case>]" -> {"stage": ..., "error": ...}
SKIPS: dict[str, str] = {}  # "<test>[<case>]" -> reason
COSINES: dict[str, float] = {}  # "<test>[<case>]" -> min cosine(int8 output, expected)
INT8_LAYERS: dict[str, int] = {}  # "<test>[<case>]" -> layers with int8 weights
LOGIT_ERRORS: dict[str, float] = {}  # "<test>[<model>]" -> int8 vs fp32 pre-softmax rel. error
OFFLOADED: dict[str, int] = {}  # "<test>[<case>]" -> oneDNN regions of a passing fp32 case
TIMINGS: dict[str, float] = {}  # "<what>[<case>]" -> wall seconds
CPU_TIMES: dict[str, float] = {}  # "<what>[<model>]" -> CPU seconds of this process (light models)


def target() -> tvm.target.Target:
    return tvm.target.Target(host_target_spec())


def first_line(err: BaseException) -> str:
    """``Type: first meaningful line`` of an exception (TVM messages can be long)."""
    text = str(err).strip()
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.strip().startswith(("Traceback", "File ", "  File"))
    ]
    line = lines[0] if lines else ""
    return f"{type(err).__name__}: {line}"[:300]


class StageFailure(AssertionError):
    """A stage of the plugin failed: the message starts with ``[stage]``."""

    def __init__(self, case: str, test: str, stage: str, detail: str):
        super().__init__(f"[{stage}] {detail}")
        self.stage, self.detail = stage, detail
        RESULTS[f"{test}[{case}]"] = {"stage": stage, "error": detail}


def fail(case: str, test: str, stage: str, err: BaseException | str):
    detail = err if isinstance(err, str) else first_line(err)
    raise StageFailure(case, test, stage, detail) from (
        err if isinstance(err, BaseException) else None
    )


def skip(case: str, test: str, reason: str):
    SKIPS[f"{test}[{case}]"] = reason
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------
# Running a Relax module


def to_numpy_list(value) -> list[np.ndarray]:
    """VM outputs (Tensor, Array/tuple of them, shapes, scalars) as a flat list of arrays."""
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Array", "List"):
        out = []
        for v in value:
            out.extend(to_numpy_list(v))
        return out
    if hasattr(value, "numpy"):
        return [value.numpy()]
    if type(value).__name__ == "ShapeTuple" or isinstance(value, tvm.runtime.ShapeTuple):
        return [np.array(list(value), dtype="int64")]
    return [np.asarray(value)]


def compile_module(mod: tvm.IRModule, pipeline: str):
    return tvm.compile(mod, target=target(), relax_pipeline=pipeline)


def run_executable(executable, inputs: list[np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    # Not np.ascontiguousarray: it turns 0-d arrays (Clip's min/max) into shape (1,).
    args = [tvm.runtime.tensor(np.array(a, order="C", copy=True)) for a in inputs]
    return to_numpy_list(vm["main"](*args))


def compare(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float, atol: float):
    """``assert_allclose`` per output (same count, shape, values); raises AssertionError."""
    if len(actual) != len(expected):
        raise AssertionError(f"{len(actual)} output(s), expected {len(expected)}")
    for i, (a, e) in enumerate(zip(actual, expected)):
        e = np.asarray(e)
        if a.shape != e.shape:
            raise AssertionError(f"output {i}: shape {a.shape}, expected {e.shape}")
        if e.dtype == np.bool_ or a.dtype == np.bool_:
            np.testing.assert_array_equal(a, e, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"output {i}")


def assertion_summary(err: AssertionError) -> str:
    """The informative lines of an assert_allclose message, on one line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    keep = [ln for ln in lines if ln.startswith(("Mismatched", "Max abs", "Max rel", "output"))]
    return "; ".join(keep or lines[:2])[:300]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a @ b / (na * nb))


# ---------------------------------------------------------------------------------------
# ONNX backend node test cases


@functools.cache
def node_cases() -> dict:
    """All node test cases of the installed onnx wheel, by name (generated in memory)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        from onnx.backend.test.case import node

        cases = node.collect_testcases(None)
    return {c.name: c for c in cases}


def case_ops(case) -> set[str]:
    return {n.op_type for n in case.model.graph.node}


def selected_case_names() -> list[str]:
    return sorted(
        name for name, case in node_cases().items() if case_ops(case) & PLUGIN_OPS
    )


def quantizable_case_names() -> list[str]:
    names = []
    for name in selected_case_names():
        case = node_cases()[name]
        if not case_ops(case) & QUANTIZABLE_OPS:
            continue
        if all(
            np.asarray(x).dtype == np.float32 for inputs, _ in case.data_sets for x in inputs
        ):
            names.append(name)
    return names


# Inputs that the plugin needs as constants to offload (conv weights are packed once) or
# to fuse (bias, BatchNorm/LayerNorm parameters, Clip bounds): op -> input positions.
WEIGHT_SLOTS = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (1,),
    "BatchNormalization": (1, 2, 3, 4),
    "LayerNormalization": (1, 2),
    "Clip": (1, 2),
}


def frozen_inputs(model) -> list[str]:
    """Graph inputs that feed a weight slot of WEIGHT_SLOTS directly (in graph order)."""
    graph_inputs = [v.name for v in _non_initializer_inputs(model)]
    wanted = set()
    for node in model.graph.node:
        for i in WEIGHT_SLOTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] in graph_inputs:
                wanted.add(node.input[i])
    # Keep at least one runtime input: a model of constants only folds away entirely.
    if wanted and len(wanted) == len(graph_inputs):
        return []
    return [n for n in graph_inputs if n in wanted]


def freeze(model, inputs: list[np.ndarray]):
    """``model`` with its weight-slot inputs turned into initializers holding ``inputs``' values.

    Node test graphs take weights as graph inputs; the plugin only offloads a conv (and
    quantize only quantizes a layer) whose weights are constants, as in real models.
    Returns the new model and the indices of the inputs that stay runtime inputs.
    """
    from onnx import numpy_helper

    names = frozen_inputs(model)
    values = dict(zip((v.name for v in _non_initializer_inputs(model)), inputs))
    frozen = type(model)()
    frozen.CopyFrom(model)
    kept = [v for v in frozen.graph.input if v.name not in names]
    del frozen.graph.input[:]
    frozen.graph.input.extend(kept)
    for n in names:
        frozen.graph.initializer.append(numpy_helper.from_array(np.asarray(values[n]), n))
    order = [v.name for v in _non_initializer_inputs(model)]
    return frozen, [order.index(v.name) for v in kept]


def frozen_case_names() -> list[str]:
    return [n for n in selected_case_names() if frozen_inputs(node_cases()[n].model)]


@dataclass
class Reference:
    """What TVM's own import + ``"default"`` pipeline does with a case."""

    model: object = None
    mod: tvm.IRModule | None = None
    supported: bool = False
    reason: str = ""  # why TVM itself cannot do it (skip reason)
    plugin_import_error: str = ""  # tvm_onednn.from_onnx failed where TVM's importer did not
    data_sets: list = field(default_factory=list)  # [(inputs, expected)] as lists of arrays


def _prepare(name: str, frozen: bool) -> Reference:
    """The case's data sets and Relax module (import only; cheap). Sets ``reason`` on failure."""
    case = node_cases()[name]
    ref = Reference(model=case.model)
    ref.data_sets = [
        ([np.asarray(x) for x in inputs], [np.asarray(o) for o in outputs])
        for inputs, outputs in case.data_sets
    ]
    if not ref.data_sets:
        ref.reason = "TVM: the case has no data set"
        return ref
    for inputs, _ in ref.data_sets:
        for x in inputs:
            if not isinstance(x, np.ndarray) or x.dtype == object:
                ref.reason = "TVM: non-tensor (sequence/optional) input"
                return ref
    if frozen:
        inputs, expected = ref.data_sets[0]
        ref.model, kept = freeze(case.model, inputs)
        ref.data_sets = [([inputs[i] for i in kept], expected)]
    try:
        ref.mod = tvm_onednn.from_onnx(ref.model)
    except Exception as plugin_err:  # noqa: BLE001
        try:
            from tvm.relax.frontend.onnx import from_onnx

            shapes = {
                v.name: list(x.shape)
                for v, x in zip(_non_initializer_inputs(ref.model), ref.data_sets[0][0])
            }
            ref.mod = from_onnx(ref.model, shape_dict=shapes)
        except Exception as err:  # noqa: BLE001
            ref.mod = None
            ref.reason = f"TVM import fails: {first_line(err)}"
            return ref
        ref.plugin_import_error = first_line(plugin_err)
    return ref


def default_verdict(name: str, frozen: bool) -> tuple[str, float]:
    """``("", seconds)`` when TVM's ``"default"`` pipeline reproduces the case, else the reason.

    Runs in the reference worker process (see :func:`start_worker`) or inline.
    """
    start = time.perf_counter()
    ref = _prepare(name, frozen)
    if ref.reason:
        return ref.reason, time.perf_counter() - start
    case = node_cases()[name]
    try:
        executable = compile_module(ref.mod, "default")
    except Exception as err:  # noqa: BLE001
        return f"TVM default pipeline fails to compile: {first_line(err)}", 0.0
    for k, (inputs, expected) in enumerate(ref.data_sets):
        try:
            actual = run_executable(executable, inputs)
        except Exception as err:  # noqa: BLE001
            return f"TVM default pipeline fails to run: {first_line(err)}", 0.0
        try:
            compare(actual, expected, case.rtol, case.atol)
        except AssertionError as err:
            where = f" (data set {k})" if len(ref.data_sets) > 1 else ""
            return f"TVM default pipeline differs from ONNX{where}: {assertion_summary(err)}", 0.0
    return "", time.perf_counter() - start


# Work shared with one worker process while this process compiles with "onednn" (both
# mostly single-threaded LLVM codegen; on 2 cores this nearly halves the wall time): the
# int8 builds of the light models, then the default-pipeline verdicts of the node cases,
# in test order. A job the worker has not started when its test needs it is done inline
# instead. CONFORMANCE_WORKERS=0 does everything inline.
_FUTURES: dict[tuple, object] = {}
_POOL = None


def start_worker(jobs: list[tuple]) -> None:
    """Queue ``jobs`` (``(key, function, *args)``, picklable, in test order) in a worker."""
    global _POOL
    import concurrent.futures
    import multiprocessing
    import os

    default = "1" if len(os.sched_getaffinity(0)) > 1 else "0"
    if int(os.environ.get("CONFORMANCE_WORKERS", default)) <= 0 or not jobs:
        return
    _POOL = concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    )
    for key, fn, *args in jobs:
        _FUTURES[key] = _POOL.submit(fn, *args)


def stop_worker() -> None:
    if _POOL is not None:
        _POOL.shutdown(wait=False, cancel_futures=True)


def shared(key: tuple, fn, *args):
    """``fn(*args)``: the worker's result if it has it or is computing it, else computed here.

    Returns ``None`` when the worker died on this job (a crash of TVM or the plugin).
    """
    future = _FUTURES.pop(key, None)
    if future is not None and not future.cancel():
        try:
            return future.result()
        except Exception as err:  # noqa: BLE001
            if "terminated abruptly" in str(err):  # BrokenProcessPool: the job crashed it
                return None
    return fn(*args)


def _verdict(name: str, frozen: bool) -> tuple[str, float]:
    result = shared(("default", name, frozen), default_verdict, name, frozen)
    if result is None:
        return "TVM default pipeline crashed the reference process", 0.0
    return result


@functools.cache
def reference(name: str, frozen: bool = False) -> Reference:
    """The case imported here, with TVM's ``"default"`` verdict (computed once per case).

    ``frozen``: the variant whose weight-slot inputs are constants (:func:`freeze`) with
    the values of the first data set, checked against that data set only.
    """
    ref = _prepare(name, frozen)
    if ref.reason:
        return ref
    ref.reason, seconds = _verdict(name, frozen)
    if not ref.reason:
        ref.supported = True
        TIMINGS[f"default{'-frozen' if frozen else ''}[{name}]"] = seconds
    return ref


def _non_initializer_inputs(model):
    initializers = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def quantized_weight_count(qmod: tvm.IRModule) -> int:
    """``R.dequantize`` calls of constants in ``main``: the layers whose weights are int8."""
    count = 0
    for block in qmod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if (
                isinstance(value, relax.Call)
                and getattr(value.op, "name", None) == "relax.dequantize"
                and isinstance(value.args[0], tvm.ir.expr.Constant)
            ):
                count += 1
    return count
