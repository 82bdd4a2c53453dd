"""``tvm-onednn run``: load an exported ``.so``, run it on an ``.npz``, report and profile."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from .io import InputError, TensorSpec, format_shape, load_npz, match_inputs
from .metadata import input_specs, read_metadata


@dataclass
class LoadedModel:
    """An exported model bound to a VM, with its input specs when it carries them."""

    path: str
    vm: relax.VirtualMachine
    inputs: list[TensorSpec] | None  # None: built without tvm-onednn's metadata
    param_names: list[str]
    metadata: dict | None = None
    module: tvm.runtime.Module | None = None  # the loaded library (for region statistics)

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
        try:
            out = self.vm["main"](*args)
        except Exception as err:  # noqa: BLE001  (the VM's checks raise TVM's error types)
            first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise InputError(f"{self.path}: the model rejected its inputs: {first}") from None
        return _flatten(out)


def _flatten(value) -> list[np.ndarray]:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [a for v in value for a in _flatten(v)]
    return [value.numpy()]


def load_library(path: str | os.PathLike) -> LoadedModel:
    """Load an exported model (``import tvm_onednn`` has registered the oneDNN loader)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"no compiled model at {path!r}")
    try:
        lib = tvm.runtime.load_module(path)
        vm = relax.VirtualMachine(lib, tvm.cpu())
    except Exception as err:  # noqa: BLE001  (any loader failure means: not our model)
        raise InputError(
            f"{path!r} is not a model exported by tvm-onednn / tvm.compile: {err}"
        ) from None
    arity = vm._get_function_arity("main")
    names = [vm._get_function_param_name("main", i) for i in range(arity)]
    metadata = read_metadata(vm)
    return LoadedModel(path, vm, input_specs(metadata), names, metadata, lib)


def region_stats(lib) -> list[dict]:
    """``get_stats`` of every oneDNN region module inside a loaded library."""
    stats, seen, todo = [], set(), [lib]
    while todo:
        mod = todo.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        if getattr(mod, "kind", "") == "onednn_json":
            stats.append(json.loads(mod["get_stats"]()))
        todo.extend(getattr(mod, "imports", []))
    return stats


def plan_builds(lib) -> dict[str, tuple[int, float]]:
    """Per oneDNN region of a library: (plans built so far, ms the last build took)."""
    return {
        st["symbol"]: (int(st["plans_built"]), float(st.get("last_plan_build_ms", 0.0)))
        for st in region_stats(lib)
        if "plans_built" in st
    }


def new_plan_ms(before: dict, after: dict) -> float | None:
    """Plan build time between two :func:`plan_builds` readings around one call, summed
    over the regions that built a plan (None: none did)."""
    built = [ms for sym, (n, ms) in after.items() if n > before.get(sym, (0, 0.0))[0]]
    return sum(built) if built else None


def plans_cached(lib) -> int | None:
    """oneDNN plans held by a library's regions (one per region and input shape), or None
    when there is no library or the runtime does not report it."""
    if lib is None:
        return None
    counts = [s.get("plans_cached") for s in region_stats(lib)]
    if not counts or any(c is None for c in counts):
        return None
    return int(sum(counts))


def inputs_for(model: LoadedModel, arrays: dict[str, np.ndarray], source: str) -> list[np.ndarray]:
    """Arrays from ``arrays`` in the model's parameter order, checked against its specs."""
    if model.inputs is not None:
        return match_inputs(arrays, model.inputs, source)
    unknown = sorted(set(arrays) - set(model.param_names))
    missing = [n for n in model.param_names if n not in arrays]
    if unknown or missing:
        raise InputError(
            f"{source}: arrays {sorted(arrays)} do not match the model's inputs {model.param_names}"
        )
    return [np.ascontiguousarray(arrays[n]) for n in model.param_names]


# --------------------------------------------------------------------------- profile


def backend_of(symbol: str) -> str:
    """Who runs a VM call: a oneDNN region, a TVM kernel, or the VM itself."""
    if symbol.startswith("onednn"):
        return "oneDNN"
    if symbol.startswith(("vm.builtin.", "vm.", "runtime.")):
        return "VM"
    return "TVM"


@dataclass
class CallProfile:
    symbol: str
    backend: str
    calls: int
    ms_per_run: float


@dataclass
class Profile:
    """Time per VM call symbol (median over runs), from the VM's instrument hook."""

    runs: int
    total_ms: float  # median wall time of one run, with the instrument on
    calls: list[CallProfile] = field(default_factory=list)

    def by_backend(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for c in self.calls:
            out[c.backend] += c.ms_per_run
        return dict(out)

    def __str__(self) -> str:
        lines = [f"profile: {self.runs} run(s), {self.total_ms:.3f} ms per run (median)"]
        lines.append(f"  {'call':<40} {'where':<7} {'calls':>5} {'ms':>9} {'share':>6}")
        for c in self.calls:
            share = 100 * c.ms_per_run / self.total_ms if self.total_ms else 0.0
            lines.append(
                f"  {c.symbol[:40]:<40} {c.backend:<7} {c.calls:>5} {c.ms_per_run:>9.3f} {share:>5.1f}%"
            )
        per = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(self.by_backend().items()))
        lines.append(f"  by backend: {per}")
        return "\n".join(lines)


def profile_calls(model: LoadedModel, args: Sequence[np.ndarray], runs: int = 10) -> Profile:
    """Time every call the VM makes (oneDNN regions, TVM kernels, builtins)."""
    tensors = [tvm.runtime.tensor(a) for a in args]
    model.vm["main"](*tensors)  # warm-up, outside the instrument
    per_run: list[dict[str, float]] = []
    counts: dict[str, int] = defaultdict(int)
    stack: list[float] = []
    current: dict[str, float] = defaultdict(float)

    def instrument(_func, symbol, before_run, _ret, *_args):
        if before_run:
            stack.append(time.perf_counter())
        else:
            current[str(symbol)] += time.perf_counter() - stack.pop()
            if not per_run:
                counts[str(symbol)] += 1
        return 0  # VMInstrumentReturnKind.NO_OP

    model.vm.set_instrument(instrument)
    walls = []
    try:
        for _ in range(max(1, runs)):
            current.clear()
            start = time.perf_counter()
            model.vm["main"](*tensors)
            walls.append(time.perf_counter() - start)
            per_run.append(dict(current))
    finally:
        model.vm.set_instrument(None)
    symbols = sorted({s for run in per_run for s in run})
    calls = []
    for s in symbols:
        ms = statistics.median(run.get(s, 0.0) for run in per_run) * 1e3
        calls.append(CallProfile(s, backend_of(s), counts.get(s, 0), ms))
    calls.sort(key=lambda c: -c.ms_per_run)
    return Profile(len(per_run), statistics.median(walls) * 1e3, calls)


# --------------------------------------------------------------------------- run


@dataclass
class TopK:
    output: int
    item: int  # index along the batch axis
    classes: list[int]
    scores: list[float]


@dataclass
class RunResult:
    outputs: list[np.ndarray]
    seconds: float
    top: list[TopK] = field(default_factory=list)
    profile: Profile | None = None
    saved_to: str | None = None
    #: What the library takes and what it was given, e.g. ``data:[batch, 3, 224, 224]``
    #: and ``data:[4, 3, 224, 224]`` (empty for libraries without tvm-onednn's metadata).
    takes: str = ""
    given: str = ""

    def __str__(self) -> str:
        lines = [f"first run: {self.seconds * 1e3:.3f} ms (includes one-time set-up)"]
        if self.takes:
            lines.insert(0, f"inputs: {self.given} (the library takes {self.takes})")
        for i, out in enumerate(self.outputs):
            line = f"output {i}: shape {list(out.shape)} {out.dtype}"
            if out.size:
                line += f", range [{float(out.min()):.4g}, {float(out.max()):.4g}]"
            lines.append(line)
        for t in self.top:
            pairs = ", ".join(f"{c}: {s:.4f}" for c, s in zip(t.classes, t.scores))
            lines.append(f"output {t.output} item {t.item} top-{len(t.classes)}: {pairs}")
        if self.profile is not None:
            lines.append(str(self.profile))
        if self.saved_to:
            lines.append(f"wrote {self.saved_to}")
        return "\n".join(lines)


def top_k(outputs: Sequence[np.ndarray], k: int) -> list[TopK]:
    """Top-``k`` classes of every ``[batch, classes]`` output (scores as given)."""
    result = []
    for i, out in enumerate(outputs):
        if out.ndim != 2 or not np.issubdtype(out.dtype, np.floating):
            continue
        for item, row in enumerate(out):
            order = np.argsort(-row, kind="stable")[:k]
            result.append(TopK(i, item, [int(c) for c in order], [float(row[c]) for c in order]))
    return result


def run_library(
    library: str | os.PathLike,
    inputs: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    print_top: int | None = None,
    profile: bool = False,
    profile_runs: int = 10,
) -> RunResult:
    """Run an exported model once on the arrays of ``inputs`` (an ``.npz`` keyed by name)."""
    if print_top is not None and print_top < 1:
        raise InputError(f"--print-top must be >= 1, got {print_top}")
    if output is not None:
        out_dir = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(out_dir):
            raise InputError(f"output directory {out_dir!r} does not exist")
    model = load_library(library)
    args = inputs_for(model, load_npz(inputs), os.fspath(inputs))
    start = time.perf_counter()
    outputs = model(*args)
    result = RunResult(outputs, time.perf_counter() - start)
    if model.inputs is not None:
        result.takes = ", ".join(f"{s.name}:{format_shape(s.shape)}" for s in model.inputs)
        result.given = ", ".join(
            f"{s.name}:{list(a.shape)}" for s, a in zip(model.inputs, args, strict=True)
        )
    if print_top:
        result.top = top_k(outputs, print_top)
    if profile:
        result.profile = profile_calls(model, args, profile_runs)
    if output is not None:
        output = os.fspath(output)
        output = output if output.endswith(".npz") else output + ".npz"  # as np.savez does
        np.savez(output, **{f"output_{i}": o for i, o in enumerate(outputs)})
        result.saved_to = output
    return result
