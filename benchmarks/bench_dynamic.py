"""Dynamic batch: libraries compiled with a free batch vs static builds of each batch.

    python benchmarks/bench_dynamic.py --models resnet50,mobilenet_v2 --batches 1,3,16 \
        --out bench-results/dynamic.json

Per model, the ONNX model gets a free batch axis (``batch``) and is compiled **once** with
the oneDNN pipeline; every batch of ``--batches`` is also imported at that static shape and
compiled on its own. Per batch:

- the dynamic library's first call at that shape (oneDNN plans for the new shape are
  built there) and, from the runtime's statistics, the plan build time it reports; the
  library's one-time set-up (weight packing) is done beforehand by a call at a batch not in
  the list, so the first call at a listed batch is the cost of a new shape only;
- steady-state medians, timed interleaved (``harness.interleaved_timings``), of
  ``--libraries`` dynamic libraries and as many static builds of the batch, built
  alternately (on a shared VM a library's speed depends on where its memory landed, see
  ``bench_model``); the ratio of the dynamic libraries' median to the static ones' (the
  target is within 3 %) and the slowest / fastest of the identical static builds
  (``control``: the noise floor of this run);
- the largest output difference between dynamic and static (same weights, same inputs).

Then ``--sweep-shapes`` distinct batch sizes (1, 2, ..., N) go through one dynamic library
(``--sweep-model``): per shape the call time, and every ``--sweep-every`` shapes the
process's resident memory and the runtime's plan cache counters (plans cached, built,
evicted). Every output of the sweep is checked against onnxruntime on the same items.
Results go to a JSON file (``meta`` as in the other benchmarks) and a summary to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from cli import prepare
from harness import interleaved_timings, machine_info, parse_list

RATIO_TARGET = 1.03  # dynamic within 3 % of static


def _resnet50(batch: int) -> onnx.ModelProto:
    from tvm_onednn.models import resnet_onnx

    return resnet_onnx(50, batch=batch)


def _mobilenet_v2(batch: int) -> onnx.ModelProto:
    from tvm_onednn.models import mobilenet_v2_onnx

    return mobilenet_v2_onnx(batch=batch)


def _small_resnet(batch: int) -> onnx.ModelProto:
    from tvm_onednn.models import small_resnet_onnx

    return small_resnet_onnx(batch=batch)


MODELS = {"resnet50": _resnet50, "mobilenet_v2": _mobilenet_v2, "small_resnet": _small_resnet}


def rss_mib() -> float:
    """Resident set size of this process (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cache_stats(executable) -> dict[str, float]:
    """Plan cache counters summed over the oneDNN regions of a compiled library."""
    from tvm_onednn.interface.run import region_stats

    stats = [s for s in region_stats(executable.mod) if s.get("dynamic")]
    keys = ("plans_cached", "plans_built", "plan_evictions", "last_plan_build_ms")
    return {k: float(sum(s.get(k, 0) for s in stats)) for k in keys} | {"regions": len(stats)}


class Library:
    """A compiled module bound to a VM; ``run(x)`` returns the first output as numpy."""

    def __init__(self, mod, target: dict) -> None:
        import tvm
        from tvm import relax

        from tvm_onednn.tuning import compile_model

        start = time.perf_counter()
        self.executable = compile_model(mod, target)
        self.build_seconds = time.perf_counter() - start
        self._main = relax.VirtualMachine(self.executable, tvm.cpu())["main"]
        self._tensor = tvm.runtime.tensor

    def runner(self, x: np.ndarray):
        arg = self._tensor(np.ascontiguousarray(x))
        return lambda: self._main(arg).numpy()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.runner(x)()


def _timed(call) -> tuple[float, Any]:
    start = time.perf_counter()
    out = call()
    return (time.perf_counter() - start) * 1e3, out


def _summary(samples: list[list[float]]) -> dict[str, Any]:
    flat = [t * 1e3 for block in samples for t in block]
    return {
        "median_ms": statistics.median(flat),
        "p10_ms": float(np.percentile(flat, 10)),
        "p90_ms": float(np.percentile(flat, 90)),
        "round_medians_ms": [round(statistics.median(b) * 1e3, 3) for b in samples],
        "samples_ms": [round(t, 3) for t in flat],
    }


def _median_of(libraries: list[dict[str, Any]], key: str) -> float:
    return statistics.median(lib[key] for lib in libraries)


def bench_model(name: str, batches: list[int], args, target: dict, log) -> list[dict]:
    """Dynamic vs static at every batch of ``batches`` for one model.

    On a shared VM, identical builds in one process differ by several per cent depending on
    where their memory landed: measured on ResNet-50 batch 3, the last-built of three
    identical static libraries was the fastest in 6 of 6 processes, the first-built usually
    the slowest (up to 10 %), and single pairs of identical builds differed by up to 4 %. One
    library of each kind is one draw of that lottery, so ``--libraries`` K libraries of each
    kind are built, in an order that favours neither: an untimed warm-up library, then K
    times (one static library per batch, one dynamic library with its set-up call and its
    first call at every batch). Per batch the K dynamic and K static libraries are timed
    interleaved; the ratio is the median of the dynamic libraries' medians over the median of
    the static ones', and ``control_ratio`` (slowest / fastest static library) is the noise
    floor of this run.
    """
    from tvm_onednn.frontend import from_onnx
    from tvm_onednn.interface.io import dynamic_batch
    from tvm_onednn.interface.run import new_plan_ms, plan_builds

    model = dynamic_batch(MODELS[name](1))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng(args.seed)
    inputs = {b: rng.standard_normal([b, *shape], np.float32) for b in batches}
    setup_batch = next(b for b in range(1, max(batches) + 2) if b not in batches)
    setup_x = rng.standard_normal([setup_batch, *shape], np.float32)

    def static_build(batch: int) -> tuple[Library, float]:
        lib = Library(from_onnx(model, {"data": [batch, *shape]}), target)
        return lib, _timed(lib.runner(inputs.get(batch, setup_x)))[0]

    warmup_library, _ = static_build(setup_batch)  # kept alive, never timed
    statics: dict[int, list[tuple[Library, float]]] = {b: [] for b in batches}
    dynamics: list[Library] = []
    first_calls: dict[int, list[tuple[float, float | None]]] = {b: [] for b in batches}
    for k in range(args.libraries):
        for batch in batches:
            statics[batch].append(static_build(batch))
        dynamic = Library(from_onnx(model), target)
        setup_ms, _ = _timed(dynamic.runner(setup_x))
        log(f"  dynamic library {k + 1}: built in {dynamic.build_seconds:.1f} s, set-up call "
            f"(weights packed, batch {setup_batch}) {setup_ms:.1f} ms")  # fmt: skip
        for batch in batches:
            before = plan_builds(dynamic.executable.mod)
            first_ms, _ = _timed(dynamic.runner(inputs[batch]))
            plan_ms = new_plan_ms(before, plan_builds(dynamic.executable.mod))
            first_calls[batch].append((first_ms, plan_ms))
        dynamics.append(dynamic)
    results = []
    for batch in batches:
        x = inputs[batch]
        runners = {f"dynamic{k}": lib.runner(x) for k, lib in enumerate(dynamics)}
        runners |= {f"static{k}": lib.runner(x) for k, (lib, _) in enumerate(statics[batch])}
        samples, iters, outputs = interleaved_timings(
            runners, args.rounds, args.warmup, args.block_seconds, args.max_iters
        )
        ref = outputs["static0"].astype(np.float64)
        diff = max(float(np.abs(outputs[f"dynamic{k}"] - ref).max()) for k in range(len(dynamics)))
        dyn = [_summary(samples[f"dynamic{k}"]) for k in range(len(dynamics))]
        sta = [_summary(samples[f"static{k}"]) for k in range(len(statics[batch]))]
        dynamic_medians = [d["median_ms"] for d in dyn]
        static_medians = [s["median_ms"] for s in sta]
        dynamic_ms, static_ms = statistics.median(dynamic_medians), statistics.median(static_medians)
        ratio = dynamic_ms / static_ms
        first_ms = statistics.median(f for f, _ in first_calls[batch])
        plans = [p for _, p in first_calls[batch] if p is not None]
        result = {
            "model": name,
            "batch": batch,
            "libraries_per_kind": len(dynamics),
            "dynamic": {"median_ms": dynamic_ms, "libraries": dyn,
                        "build_seconds": [lib.build_seconds for lib in dynamics],
                        "iterations_per_block": iters["dynamic0"]},
            "static": {"median_ms": static_ms, "libraries": sta,
                       "build_seconds": [lib.build_seconds for lib, _ in statics[batch]],
                       "first_call_ms": [ms for _, ms in statics[batch]],
                       "iterations_per_block": iters["static0"]},
            "static_ms": static_ms,
            "ratio_dynamic_over_static": ratio,
            # 10th percentiles: less sensitive to other processes on a shared machine
            "ratio_p10": _median_of(dyn, "p10_ms") / _median_of(sta, "p10_ms"),
            "control_ratio": max(static_medians) / min(static_medians),
            "within_target": ratio <= RATIO_TARGET,
            "first_call_ms": first_ms,
            "first_call_extra_ms": first_ms - dynamic_ms,
            "plan_build_ms": statistics.median(plans) if plans else None,
            "max_abs_diff": diff,
            "max_rel_diff": diff / max(float(np.abs(ref).max()), 1e-30),
        }  # fmt: skip
        results.append(result)
        log(
            f"  batch {batch:>3}: dynamic {dynamic_ms:.2f} ms (libraries "
            f"{', '.join(f'{m:.2f}' for m in dynamic_medians)}), static {static_ms:.2f} ms "
            f"({', '.join(f'{m:.2f}' for m in static_medians)}): ratio {ratio:.3f}, control "
            f"{result['control_ratio']:.3f}; first call at the new shape {first_ms:.1f} ms "
            f"(+{result['first_call_extra_ms']:.1f}); max |dyn - static| {diff:.1e}"
        )
        del runners
    del warmup_library, statics, dynamics
    return results


def sweep(name: str, num_shapes: int, every: int, target: dict, seed: int, log) -> dict:
    """Batches 1..num_shapes through one dynamic library: time, RSS, plan cache, outputs."""
    import onnxruntime as ort

    from tvm_onednn.frontend import from_onnx
    from tvm_onednn.interface.io import dynamic_batch

    model = dynamic_batch(MODELS[name](1))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    x = np.random.default_rng(seed).standard_normal([num_shapes, *shape], np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"data": x[i : i + 16]})[0]
                               for i in range(0, num_shapes, 16)])  # fmt: skip
    scale = float(np.abs(expected).max())
    rss_start = rss_mib()
    library = Library(from_onnx(model), target)
    rss_built = rss_mib()
    calls_ms, checkpoints, worst = [], [], 0.0
    for batch in range(1, num_shapes + 1):
        ms, out = _timed(library.runner(x[:batch]))
        calls_ms.append(round(ms, 3))
        worst = max(worst, float(np.abs(out - expected[:batch]).max()))
        if batch % every == 0 or batch in (1, num_shapes):
            stats = cache_stats(library.executable)
            checkpoints.append({"shapes": batch, "rss_mib": rss_mib(), **stats})
    again_ms, _ = _timed(library.runner(x[:1]))  # the first shape again: cached or evicted?
    final = checkpoints[-1]
    log(
        f"  {num_shapes} shapes: RSS {rss_start:.0f} MiB before the build, {rss_built:.0f} after, "
        f"{final['rss_mib']:.0f} at the end; plans cached {final['plans_cached']:.0f}, built "
        f"{final['plans_built']:.0f}, evicted {final['plan_evictions']:.0f}; "
        f"max |out - onnxruntime| {worst:.1e} (logits up to {scale:.1f})"
    )
    return {
        "model": name,
        "shapes": num_shapes,
        "rss_mib_before_build": rss_start,
        "rss_mib_after_build": rss_built,
        "checkpoints": checkpoints,
        "call_ms": calls_ms,
        "first_shape_again_ms": again_ms,
        "max_abs_diff_vs_onnxruntime": worst,
        "max_abs_output": scale,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import os

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="resnet50,mobilenet_v2", help=f"from {sorted(MODELS)}")
    p.add_argument("--batches", default="1,3,16")
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    p.add_argument("--libraries", type=int, default=3,
                   help="libraries of each kind, dynamic and static per batch (default 3)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per library first")
    p.add_argument("--block-seconds", type=float, default=2.0, help="budget of one block")
    p.add_argument("--max-iters", type=int, default=20, help="max calls per block")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--mcpu", default="auto", help="LLVM -mcpu for TVM (default: this host's)")
    p.add_argument("--sweep-model", default="small_resnet", help="model of the shape sweep")
    p.add_argument("--sweep-shapes", type=int, default=200, help="distinct batch sizes (0: none)")
    p.add_argument("--sweep-every", type=int, default=20, help="RSS / cache sample interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results/dynamic.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import datetime
    import json

    args = parse_args(argv)
    models, mcpu = prepare(args, MODELS)
    if args.sweep_shapes and args.sweep_model not in MODELS:
        sys.exit(f"unknown --sweep-model {args.sweep_model!r}; choose from {sorted(MODELS)}")
    batches = sorted({int(b) for b in parse_list(args.batches)})
    import tvm_onednn

    tvm_onednn.set_num_threads(args.threads)
    target = {"kind": "llvm", "mcpu": mcpu}
    payload: dict[str, Any] = {
        "meta": {
            "benchmark": "dynamic",
            "argv": sys.argv,
            "options": {k: str(v) for k, v in vars(args).items()} | {"mcpu": mcpu},
            "ratio_target": RATIO_TARGET,
        },
        "results": [],
        "sweep": None,
    }

    def write() -> None:
        payload["meta"]["machine"] = machine_info(args.threads)
        payload["meta"]["finished"] = datetime.datetime.now(datetime.UTC).isoformat()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1) + "\n")

    def log(line: str) -> None:
        print(line, flush=True)

    for name in models:
        log(f"\n[{name}, batches {batches}]")
        payload["results"] += bench_model(name, batches, args, target, log)
        write()
    if args.sweep_shapes:
        log(f"\n[{args.sweep_model}: {args.sweep_shapes} distinct batch sizes through one library]")
        payload["sweep"] = sweep(
            args.sweep_model, args.sweep_shapes, args.sweep_every, target, args.seed, log
        )
        write()
    log(f"\n{'model':<14}{'batch':>6}{'dynamic ms':>12}{'static ms':>11}{'ratio':>8}"
        f"{'p10 ratio':>10}{'control':>9}{'1st call +ms':>14}{'plan ms':>9}{'rel diff':>10}")  # fmt: skip
    for r in payload["results"]:
        plan = f"{r['plan_build_ms']:.1f}" if r["plan_build_ms"] is not None else "-"
        log(
            f"{r['model']:<14}{r['batch']:>6}{r['dynamic']['median_ms']:>12.2f}"
            f"{r['static_ms']:>11.2f}{r['ratio_dynamic_over_static']:>8.3f}"
            f"{r['ratio_p10']:>10.3f}{r['control_ratio']:>9.3f}"
            f"{r['first_call_extra_ms']:>14.1f}{plan:>9}{r['max_rel_diff']:>10.1e}"
        )
    log(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
