"""Shared benchmark harness: interleaved timing of several systems in one process.

A *system* (ONNX Runtime, OpenVINO, TVM, ...) turns a *workload* (an ONNX model plus its input
arrays) into a runner: a no-argument callable doing one inference and returning the first
output as numpy. All runners of a workload are built first, then timed round-robin: in each of
``rounds`` rounds every system runs a block of back-to-back iterations, the block order
rotating from round to round. Machine noise (other tenants, frequency changes) thus hits all
systems alike, and medians over all iterations are reported.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

Runner = Callable[[], np.ndarray]

_VERSIONED_PACKAGES = ("apache-tvm", "apache-tvm-ffi", "tvm-onednn", "onnx", "onnxruntime",
                       "openvino", "nncf", "torch", "numpy")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Workload:
    """One model at one batch size with fixed inputs, shared by every system."""

    model_name: str
    batch: int
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    #: Builds an equivalent eval-mode torch module, for the PyTorch peers (None: no such peer).
    torch_module: Callable[[], Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.model_name} b{self.batch}"


class System(abc.ABC):
    """An inference engine under test. ``peer`` systems are what tvm-onednn is compared to."""

    name: str
    peer: bool = True

    def skip_reason(self, workload: Workload) -> str | None:
        """Why this system does not run ``workload`` (None: it does)."""
        return None

    @abc.abstractmethod
    def build(self, workload: Workload, threads: int) -> Runner:
        """Compile/load the workload and return its runner (raises if it cannot)."""

    def settings(self) -> dict[str, Any]:
        """Configuration recorded in the results (threads, hints, target...)."""
        return {}


@dataclasses.dataclass
class Result:
    """Outcome of one system on one workload."""

    model: str
    batch: int
    system: str
    peer: bool
    status: str  # "ok", "skipped" or "failed"
    error: str | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    build_seconds: float | None = None
    iterations_per_block: int | None = None
    samples_ms: list[float] = dataclasses.field(default_factory=list)
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    round_medians_ms: list[float] = dataclasses.field(default_factory=list)
    images_per_second: float | None = None
    vs_best_peer: float | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    reference: str | None = None


def _time_call(run: Runner) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def interleaved_timings(
    runners: dict[str, Runner],
    rounds: int,
    warmup: int,
    block_seconds: float,
    max_iters: int,
    warmup_seconds: float = 10.0,
) -> tuple[dict[str, list[list[float]]], dict[str, int], dict[str, np.ndarray]]:
    """Time ``runners`` round-robin.

    Each runner is first warmed up with ``warmup`` calls (at least one; fewer once the
    warm-up has taken ``warmup_seconds``, for very slow systems); its block size is then
    ``block_seconds`` worth of calls, judged by the last warm-up call, between 1 and
    ``max_iters``. Returns per-round lists of call durations (seconds), block sizes and the
    last output of every runner.
    """
    iters: dict[str, int] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, run in runners.items():
        elapsed, spent = 0.0, 0.0
        for _ in range(max(warmup, 1)):
            elapsed, outputs[name] = _time_call(run)
            spent += elapsed
            if spent > warmup_seconds:
                break
        iters[name] = max(1, min(max_iters, round(block_seconds / max(elapsed, 1e-9))))
    samples: dict[str, list[list[float]]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            # One untimed call per block: the system that ran before may still have threads
            # spinning (TBB, onnxruntime's pool); every system gets the same settling call.
            _time_call(runners[name])
            block = []
            for _ in range(iters[name]):
                elapsed, outputs[name] = _time_call(runners[name])
                block.append(elapsed)
            samples[name].append(block)
    return samples, iters, outputs


def _percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def run_workload(
    workload: Workload,
    systems: Sequence[System],
    *,
    threads: int,
    rounds: int,
    warmup: int,
    block_seconds: float,
    max_iters: int,
    reference: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """Build every system for ``workload``, time them interleaved and summarize.

    A system that cannot build is reported as "failed" with its error; the others still run.
    Outputs are compared with the ``reference`` system's (default: the first that built).
    """
    results: dict[str, Result] = {}
    runners: dict[str, Runner] = {}
    affinity = os.sched_getaffinity(0)

    def keep_affinity(culprit: str) -> None:
        # A runtime that pins the main thread would confine every later runtime's threads.
        if os.sched_getaffinity(0) != affinity:
            log(f"  warning: {culprit} changed the main thread's CPU affinity; restored")
            os.sched_setaffinity(0, affinity)

    for system in systems:
        res = Result(workload.model_name, workload.batch, system.name, system.peer, "ok")
        res.settings = system.settings()
        results[system.name] = res
        reason = system.skip_reason(workload)
        if reason:
            res.status, res.error = "skipped", reason
            log(f"  {system.name}: skipped ({reason})")
            continue
        start, stage = time.perf_counter(), "build"
        try:
            runner = system.build(workload, threads)
            res.build_seconds = time.perf_counter() - start
            stage = "first run"  # a crash here must not abort the interleaved timing later
            runner()
        except Exception as err:  # any error must not stop the other systems
            res.status, res.error = "failed", f"{stage}: {type(err).__name__}: {err}"
            log(f"  {system.name}: FAILED in {res.error}")
            log("".join(traceback.format_exception(err, limit=-3)).rstrip())
            continue
        runners[system.name] = runner
        keep_affinity(system.name)  # thread pools may be created by the first run
        res.settings = system.settings()  # some systems report what they actually chose
        log(f"  {system.name}: built in {res.build_seconds:.1f} s")
    if not runners:
        return list(results.values())

    samples, iters, outputs = interleaved_timings(runners, rounds, warmup, block_seconds, max_iters)
    keep_affinity("a runner")
    for name, blocks in samples.items():
        res = results[name]
        flat = [t for block in blocks for t in block]
        res.iterations_per_block = iters[name]
        res.samples_ms = [round(t * 1e3, 3) for t in flat]
        res.median_ms = statistics.median(flat) * 1e3
        res.p10_ms, res.p90_ms = _percentile_ms(flat, 10), _percentile_ms(flat, 90)
        res.round_medians_ms = [round(statistics.median(b) * 1e3, 3) for b in blocks]
        res.images_per_second = workload.batch / statistics.median(flat)

    ref_name = reference if reference in outputs else next(iter(outputs))
    ref = outputs[ref_name]
    for name, out in outputs.items():
        diff = float(np.max(np.abs(out.astype(np.float64) - ref)))
        results[name].max_abs_diff = diff
        results[name].max_rel_diff = diff / max(float(np.max(np.abs(ref))), 1e-30)
        results[name].reference = ref_name

    peer_best = max(
        (r.images_per_second for r in results.values() if r.peer and r.images_per_second),
        default=None,
    )
    if peer_best:
        for res in results.values():
            if res.images_per_second:
                res.vs_best_peer = res.images_per_second / peer_best
    return list(results.values())


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, ISA extensions relevant to oneDNN, thread settings and package versions."""
    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni"]
    isa += ["amx_tile", "amx_bf16", "amx_int8"]
    versions = {}
    for pkg in _VERSIONED_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    env_keys = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "TVM_NUM_THREADS", "TVM_ONEDNN_NUM_THREADS")
    return {
        "cpu": cpu,
        "isa": {flag: flag in flags for flag in isa},
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "threads": threads,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "env": {k: os.environ.get(k) for k in env_keys},
    }


def format_table(results: Sequence[Result]) -> str:
    """Human-readable table, one block per workload."""
    head = (
        f"{'system':<16}{'build s':>9}{'calls':>7}{'median ms':>11}{'p10-p90 ms':>19}"
        f"{'img/s':>9}{'vs best peer':>14}{'rel diff':>10}"
    )
    lines: list[str] = []
    for key in dict.fromkeys((r.model, r.batch) for r in results):
        lines += ["", f"== {key[0]}  batch {key[1]}", head]
        for r in (r for r in results if (r.model, r.batch) == key):
            if r.status != "ok":
                lines.append(f"{r.system:<16}  {r.status}: {(r.error or '')[:90]}")
                continue
            calls = f"{len(r.round_medians_ms)}x{r.iterations_per_block}"
            spread = f"{r.p10_ms:.1f}-{r.p90_ms:.1f}"
            ratio = f"{r.vs_best_peer:.2f}x" if r.vs_best_peer else "-"
            lines.append(
                f"{r.system:<16}{r.build_seconds:>9.1f}{calls:>7}{r.median_ms:>11.1f}"
                f"{spread:>19}{r.images_per_second:>9.2f}{ratio:>14}{r.max_rel_diff:>10.1e}"
            )
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], results: Sequence[Result]) -> None:
    """Write ``{"meta": ..., "results": [...]}`` (creating parent folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": {**meta, "finished": datetime.datetime.now(datetime.UTC).isoformat()},
        "results": [dataclasses.asdict(r) for r in results],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")


def parse_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]
