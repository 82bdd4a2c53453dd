"""``tvm-onednn benchmark``: per batch size, median latency, items/s and the first call at
a new shape, optionally vs ONNX Runtime.

Systems are timed interleaved: each round runs a block of calls of every system (and
batch) in turn, so load from other processes lands on all of them alike; the median over
all calls is reported. One call is one synchronous inference of the whole batch.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..threads import default_num_threads, set_num_threads
from .io import (
    InputError,
    concrete_shapes,
    format_shape,
    import_model,
    is_static_dim,
    load_onnx,
    model_inputs,
    random_inputs,
)
from .run import load_library, new_plan_ms, plan_builds, plans_cached

#: What ``compare`` accepts: ONNX Runtime, and the build without the tuning records.
COMPARE = ("onnxruntime", "untuned")
UNTUNED = "tvm-onednn-untuned"

Call = Callable[[], object]


@dataclass
class Measurement:
    system: str
    batch: int
    samples_ms: list[float] = field(repr=False)
    #: The first call at this batch's shape, before any warm-up: for tvm-onednn with a free
    #: batch, the oneDNN plans of a new shape are built here (the very first call of a
    #: library also packs the weights).
    first_call_ms: float | None = None
    #: Of that first call, the time the runtime reports for building the new shape's oneDNN
    #: plans (summed over regions; None when it built none or does not report it).
    plan_build_ms: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def items_per_second(self) -> float:
        return self.batch / (self.median_ms / 1e3)


@dataclass
class BenchmarkReport:
    model: str
    threads: int
    measurements: list[Measurement] = field(default_factory=list)
    max_abs_diff: dict[int, float] = field(default_factory=dict)  # batch -> vs onnxruntime
    plot: str | None = None
    #: How tvm-onednn was built: "one library, any batch" or "one build per batch".
    builds: str = ""
    #: Input shapes the timed library takes, e.g. "data:[batch, 3, 224, 224]".
    accepts: str = ""
    #: oneDNN plans the library holds after the run (one per region and shape), when the
    #: runtime reports it.
    plans_cached: int | None = None

    def ratio(self, m: Measurement, reference: str = "onnxruntime") -> float | None:
        """``m``'s speed relative to ``reference`` at the same batch (>1: faster)."""
        for r in self.measurements:
            if r.system == reference and r.batch == m.batch:
                return r.median_ms / m.median_ms
        return None

    def __str__(self) -> str:
        lines = [f"{self.model}: {self.threads} thread(s), median of interleaved calls"]
        if self.builds:
            takes = f", takes {self.accepts}" if self.accepts else ""
            lines.append(f"tvm-onednn: {self.builds}{takes}")
        lines.append(
            f"{'system':<18} {'batch':>5} {'median ms':>10} {'items/s':>10} "
            f"{'1st call ms':>12} {'plan ms':>8} {'vs onnxruntime':>15}"
        )
        for m in self.measurements:
            ratio = self.ratio(m)
            rel = f"{ratio:.2f}x" if ratio is not None else "-"
            first = f"{m.first_call_ms:.3f}" if m.first_call_ms is not None else "-"
            plan = f"{m.plan_build_ms:.2f}" if m.plan_build_ms is not None else "-"
            lines.append(
                f"{m.system:<18} {m.batch:>5} {m.median_ms:>10.3f} "
                f"{m.items_per_second:>10.1f} {first:>12} {plan:>8} {rel:>15}"
            )
        lines.append(
            "1st call: the first call at that batch's shape (new oneDNN plans are built there, "
            "plan ms as the runtime reports it; a library's very first call also packs its "
            "weights)"
        )
        if self.plans_cached is not None:
            lines.append(f"oneDNN plans cached after the run: {self.plans_cached}")
        for m in self.measurements:
            if m.system == "tvm-onednn" and (ratio := self.ratio(m, UNTUNED)) is not None:
                lines.append(f"batch {m.batch}: tuned vs untuned {ratio:.3f}x")
        for batch, diff in sorted(self.max_abs_diff.items()):
            lines.append(f"batch {batch}: max |tvm-onednn - onnxruntime| = {diff:.2e}")
        if self.plot:
            lines.append(f"wrote {self.plot}")
        return "\n".join(lines)


def interleaved(
    calls: dict[Hashable, Call], rounds: int, block: int, warmup: int = 2
) -> dict[Hashable, list[float]]:
    """Per system, the durations (ms) of ``rounds`` x ``block`` calls, systems taking turns."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[Hashable, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for _ in range(block):
                start = time.perf_counter()
                calls[name]()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def timed_first_call(call: Call) -> float:
    """Milliseconds of one call (meant for the first call at a shape)."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def _tvm_call(executable_or_model, arrays: Sequence[np.ndarray]) -> Call:
    import tvm
    from tvm import relax

    vm = executable_or_model
    if not isinstance(vm, relax.VirtualMachine):
        vm = relax.VirtualMachine(executable_or_model, tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
    main = vm["main"]

    def call():
        out = main(*args)
        return out.numpy() if hasattr(out, "numpy") else out[0].numpy()

    return call


def _ort_session(model_path: str, shapes: dict[str, list[int]] | None, threads: int):
    """An ONNX Runtime CPU session; ``shapes`` (when given) are pinned in the graph first."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError(
            "--compare onnxruntime needs onnxruntime (pip install onnxruntime)"
        ) from None
    model = load_onnx(model_path)
    if shapes:
        # Pin the requested shapes in the graph so ORT sees the same static problem.
        for value in model.graph.input:
            if value.name in shapes:
                dims = value.type.tensor_type.shape.dim
                for dim, size in zip(dims, shapes[value.name]):
                    dim.Clear()
                    dim.dim_value = int(size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_plot() -> None:
    if not plot_available():
        raise InputError(
            "--plot needs matplotlib, which is not installed (pip install matplotlib); "
            "run without --plot for the table"
        )


def save_plot(report: BenchmarkReport, path: str) -> None:
    """A bar chart of items/s per system, one group of bars per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(m.system for m in report.measurements))
    batches = sorted({m.batch for m in report.measurements})
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(batches) * len(systems), 4))
    for i, system in enumerate(systems):
        values = [
            next((m.items_per_second for m in report.measurements
                  if m.system == system and m.batch == b), 0.0)
            for b in batches
        ]  # fmt: skip
        xs = [j + i * width for j in range(len(batches))]
        ax.bar(xs, values, width, label=system)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(batches))])
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("items / s (median)")
    ax.set_title(f"{os.path.basename(report.model)}, {report.threads} thread(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _check_options(compare, plot, tuning_records, rounds, block) -> None:
    unknown = sorted(set(compare) - set(COMPARE))
    if unknown:
        raise InputError(f"cannot compare with {unknown}; available: {list(COMPARE)}")
    if plot is not None:
        require_plot()
        plot_dir = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(plot_dir):
            raise InputError(f"plot directory {plot_dir!r} does not exist")
    if "untuned" in compare and not tuning_records:
        raise InputError("--compare untuned needs --tuning-records")
    if rounds < 1 or block < 1:
        raise InputError("rounds and block must be >= 1")


def _accepts(specs) -> str:
    return ", ".join(f"{s.name}:{format_shape(s.shape)}" for s in specs)


def _default_batch(specs) -> int:
    first = specs[0].shape[0] if specs and specs[0].shape else 1
    return int(first) if is_static_dim(first) else 1


def benchmark(
    model: str | os.PathLike,
    *,
    batches: Sequence[int] = (),
    compare: Sequence[str] = (),
    plot: str | os.PathLike | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    target: str | dict | None = None,
    tuning_records: Sequence[str | os.PathLike] = (),
    rounds: int = 5,
    block: int = 5,
    threads: int | None = None,
) -> BenchmarkReport:
    """Benchmark an ONNX model or an exported ``.so`` at one or more batch sizes.

    An ``.so`` compiled with a free batch dim runs every batch from the one library; one
    compiled for a fixed batch runs that batch only (another is an :class:`InputError`).
    An ONNX model whose batch axis is dynamic (and not fixed by ``input_shapes``) is
    compiled once and run at every batch; a static one is compiled per batch.
    Per batch: the first call at its shape (plan building), then interleaved timing.

    ``compare``: ``"onnxruntime"`` (the same model in ONNX Runtime, same threads) and
    ``"untuned"`` (the build without ``tuning_records``, to see what tuning gained); both
    need the ONNX model.
    """
    model = os.fspath(model)
    _check_options(compare, plot, tuning_records, rounds, block)
    threads = threads or default_num_threads()
    set_num_threads(threads)
    report = BenchmarkReport(model, threads)
    if model.endswith((".so", ".tar", ".dylib")):
        if compare:
            raise InputError("--compare needs the ONNX model, not a compiled .so")
        _benchmark_library(report, model, batches, rounds, block)
    else:
        _benchmark_onnx(
            report, model, batches, compare, input_shapes, target, tuning_records, rounds, block
        )
    if plot is not None:
        save_plot(report, os.fspath(plot))
        report.plot = os.fspath(plot)
    return report


def _keep_affinity(affinity: set[int]) -> None:
    # TVM's pool starts on the first call and may pin this thread to part of the cores.
    if os.sched_getaffinity(0) != affinity:
        os.sched_setaffinity(0, affinity)


def _measure(
    report: BenchmarkReport,
    calls: dict[tuple[str, int], Call],
    rounds: int,
    block: int,
    modules: dict[str, object] | None = None,
) -> None:
    """First call of every (system, batch), in order, then interleaved timing of all.

    ``modules`` maps a system to its runtime module, whose oneDNN regions report the plan
    build time of a first call."""
    affinity = os.sched_getaffinity(0)
    first, plan = {}, {}
    for key, call in calls.items():
        module = (modules or {}).get(key[0])
        before = plan_builds(module) if module is not None else {}
        first[key] = timed_first_call(call)
        _keep_affinity(affinity)
        if module is not None:
            plan[key] = new_plan_ms(before, plan_builds(module))
    samples = interleaved(calls, rounds, block)
    for (system, batch), values in samples.items():
        report.measurements.append(
            Measurement(system, batch, values, first[(system, batch)], plan.get((system, batch)))
        )


def _benchmark_library(report, path, batches, rounds, block) -> None:
    loaded = load_library(path)
    if loaded.inputs is None:
        raise InputError(
            f"{path!r} carries no input description (not built by tvm-onednn compile)"
        )
    report.accepts = _accepts(loaded.inputs)
    free = not is_static_dim(loaded.inputs[0].shape[0])
    report.builds = "one library, any batch" if free else "one library, one batch"
    calls = {}
    for batch in batches or [_default_batch(loaded.inputs)]:
        arrays = random_inputs(loaded.inputs, batch=batch, source=repr(path))
        args = [arrays[s.name] for s in loaded.inputs]
        calls[("tvm-onednn", batch)] = _tvm_call(loaded.vm, args)
    _measure(report, calls, rounds, block, {"tvm-onednn": loaded.module})
    report.plans_cached = plans_cached(loaded.module)


def _benchmark_onnx(
    report, model, batches, compare, input_shapes, target, tuning_records, rounds, block
) -> None:
    from ..tuning import compile_model

    specs = model_inputs(load_onnx(model), input_shapes)
    batches = list(batches or [_default_batch(specs)])
    for batch in batches:  # bad batches fail before anything is compiled
        if batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        if not is_static_dim(specs[0].shape[0]):
            concrete_shapes(specs, batch, repr(model))
    calls: dict[tuple[str, int], Call] = {}
    feeds: dict[int, dict[str, np.ndarray]] = {}
    if not is_static_dim(specs[0].shape[0]):
        # One build, every batch: the same library (and ORT session) serves them all.
        report.builds = "one library, any batch"
        mod, specs = import_model(model, input_shapes)
        report.accepts = _accepts(specs)
        builds = {"tvm-onednn": compile_model(mod, target, tuning_records)}
        if "untuned" in compare:
            builds[UNTUNED] = compile_model(mod, target)
        session = _ort_session(model, None, report.threads) if "onnxruntime" in compare else None
        vms = {name: _vm(ex) for name, ex in builds.items()}
        modules = {name: ex.mod for name, ex in builds.items()}
        for batch in batches:
            feeds[batch] = random_inputs(specs, batch=batch)
            args = [feeds[batch][s.name] for s in specs]
            for name, vm in vms.items():
                calls[(name, batch)] = _tvm_call(vm, args)
            if session is not None:
                calls[("onnxruntime", batch)] = _ort_run(session, feeds[batch])
    else:
        report.builds = "one build per batch"
        modules = {}
        for batch in batches:
            shapes = {s.name: [batch, *s.shape[1:]] for s in specs}
            mod, batch_specs = import_model(model, {**(input_shapes or {}), **shapes})
            feeds[batch] = random_inputs(batch_specs)
            args = [feeds[batch][s.name] for s in batch_specs]
            executable = compile_model(mod, target, tuning_records)
            calls[("tvm-onednn", batch)] = _tvm_call(executable, args)
            if "untuned" in compare:
                calls[(UNTUNED, batch)] = _tvm_call(compile_model(mod, target), args)
            if "onnxruntime" in compare:
                session = _ort_session(model, shapes, report.threads)
                calls[("onnxruntime", batch)] = _ort_run(session, feeds[batch])
    _measure(report, calls, rounds, block, modules)
    if "onnxruntime" in compare:
        for batch in batches:
            ours = np.asarray(calls[("tvm-onednn", batch)]())
            theirs = np.asarray(calls[("onnxruntime", batch)]())
            report.max_abs_diff[batch] = float(np.abs(ours - theirs).max())


def _vm(executable):
    import tvm
    from tvm import relax

    return relax.VirtualMachine(executable, tvm.cpu())


def _ort_run(session, feeds: dict[str, np.ndarray]) -> Call:
    return lambda: session.run(None, feeds)[0]


__all__ = ["BenchmarkReport", "Measurement", "benchmark", "interleaved"]
