"""``tvm-onednn benchmark``: median latency and images/s, optionally vs ONNX Runtime.

Systems are timed interleaved: each round runs a block of calls of every system in turn,
so load from other processes lands on all of them alike; the median over all calls is
reported. One call is one synchronous inference of the whole batch.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..threads import default_num_threads, set_num_threads
from .io import InputError, import_model, load_onnx, model_inputs, random_inputs, with_batch
from .run import load_library

#: What ``compare`` accepts: ONNX Runtime, and the build without the tuning records.
COMPARE = ("onnxruntime", "untuned")
UNTUNED = "tvm-onednn-untuned"

Call = Callable[[], object]


@dataclass
class Measurement:
    system: str
    batch: int
    samples_ms: list[float] = field(repr=False)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def images_per_second(self) -> float:
        return self.batch / (self.median_ms / 1e3)


@dataclass
class BenchmarkReport:
    model: str
    threads: int
    measurements: list[Measurement] = field(default_factory=list)
    max_abs_diff: dict[int, float] = field(default_factory=dict)  # batch -> vs onnxruntime
    plot: str | None = None

    def ratio(self, m: Measurement, reference: str = "onnxruntime") -> float | None:
        """``m``'s speed relative to ``reference`` at the same batch (>1: faster)."""
        for r in self.measurements:
            if r.system == reference and r.batch == m.batch:
                return r.median_ms / m.median_ms
        return None

    def __str__(self) -> str:
        lines = [
            f"{self.model}: {self.threads} thread(s), median of interleaved calls",
            f"{'system':<18} {'batch':>5} {'median ms':>10} {'img/s':>10} {'vs onnxruntime':>15}",
        ]
        for m in self.measurements:
            ratio = self.ratio(m)
            rel = f"{ratio:.2f}x" if ratio is not None else "-"
            lines.append(
                f"{m.system:<18} {m.batch:>5} {m.median_ms:>10.3f} "
                f"{m.images_per_second:>10.1f} {rel:>15}"
            )
        for m in self.measurements:
            if m.system == "tvm-onednn" and (ratio := self.ratio(m, UNTUNED)) is not None:
                lines.append(f"batch {m.batch}: tuned vs untuned {ratio:.3f}x")
        for batch, diff in sorted(self.max_abs_diff.items()):
            lines.append(f"batch {batch}: max |tvm-onednn - onnxruntime| = {diff:.2e}")
        if self.plot:
            lines.append(f"wrote {self.plot}")
        return "\n".join(lines)


def interleaved(
    calls: dict[str, Call], rounds: int, block: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Per system, the durations (ms) of ``rounds`` x ``block`` calls, systems taking turns."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for _ in range(block):
                start = time.perf_counter()
                calls[name]()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


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


def _ort_call(model_path: str, feeds: dict[str, np.ndarray], shapes, threads: int) -> Call:
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError(
            "--compare onnxruntime needs onnxruntime (pip install onnxruntime)"
        ) from None
    from ..frontend import input_shapes as declared_shapes

    model = load_onnx(model_path)
    if any(list(shapes[n]) != list(d) for n, d in declared_shapes(model).items()):
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
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return lambda: session.run(None, feeds)[0]


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
    """A bar chart of images/s per system, one group of bars per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(m.system for m in report.measurements))
    batches = sorted({m.batch for m in report.measurements})
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(batches) * len(systems), 4))
    for i, system in enumerate(systems):
        values = [
            next((m.images_per_second for m in report.measurements
                  if m.system == system and m.batch == b), 0.0)
            for b in batches
        ]  # fmt: skip
        xs = [j + i * width for j in range(len(batches))]
        ax.bar(xs, values, width, label=system)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(batches))])
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("images / s (median)")
    ax.set_title(f"{os.path.basename(report.model)}, {report.threads} thread(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    """Benchmark an ONNX model (compiled here, per batch size) or an exported ``.so``.

    ``compare``: ``"onnxruntime"`` (the same model in ONNX Runtime, same threads) and
    ``"untuned"`` (the build without ``tuning_records``, to see what tuning gained); both
    need the ONNX model. An ``.so`` runs at the batch it was compiled for.
    """
    from ..tuning import compile_model

    model = os.fspath(model)
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
    threads = threads or default_num_threads()
    set_num_threads(threads)
    affinity = os.sched_getaffinity(0)
    report = BenchmarkReport(model, threads)

    if model.endswith((".so", ".tar", ".dylib")):
        if compare:
            raise InputError("--compare needs the ONNX model, not a compiled .so")
        loaded = load_library(model)
        if loaded.inputs is None:
            raise InputError(
                f"{model!r} carries no input description (not built by tvm-onednn compile)"
            )
        batch = loaded.inputs[0].shape[0]
        if batches and list(batches) != [batch]:
            raise InputError(f"{model!r} was compiled for batch {batch}; --batch cannot change it")
        arrays = random_inputs(loaded.inputs)
        args = [arrays[s.name] for s in loaded.inputs]
        samples = interleaved({"tvm-onednn": _tvm_call(loaded.vm, args)}, rounds, block)
        report.measurements.append(Measurement("tvm-onednn", batch, samples["tvm-onednn"]))
    else:
        specs = model_inputs(load_onnx(model), input_shapes)
        for batch in batches or [specs[0].shape[0]]:
            shapes = with_batch(specs, batch)
            mod, batch_specs = import_model(model, shapes)
            arrays = random_inputs(batch_specs)
            args = [arrays[s.name] for s in batch_specs]
            calls = {"tvm-onednn": _tvm_call(compile_model(mod, target, tuning_records), args)}
            calls["tvm-onednn"]()  # TVM's pool starts here (and may pin this thread)
            if os.sched_getaffinity(0) != affinity:
                os.sched_setaffinity(0, affinity)
            if "untuned" in compare:
                calls[UNTUNED] = _tvm_call(compile_model(mod, target), args)
            if "onnxruntime" in compare:
                calls["onnxruntime"] = _ort_call(model, arrays, shapes, threads)
                report.max_abs_diff[batch] = float(
                    np.abs(
                        np.asarray(calls["tvm-onednn"]()) - np.asarray(calls["onnxruntime"]())
                    ).max()
                )
            samples = interleaved(calls, rounds, block)
            for name, values in samples.items():
                report.measurements.append(Measurement(name, batch, values))
    if plot is not None:
        save_plot(report, os.fspath(plot))
        report.plot = os.fspath(plot)
    return report


__all__ = ["BenchmarkReport", "Measurement", "benchmark", "interleaved"]
