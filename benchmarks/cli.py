"""What every benchmark script shares: common options, process set-up, and the main loop."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from harness import (
    Result,
    System,
    Workload,
    format_table,
    machine_info,
    parse_list,
    run_workload,
    write_json,
)
from systems import host_mcpu, prepare_process


def add_common_arguments(
    p: argparse.ArgumentParser, models: Iterable[str], systems: Iterable[str], out: str
) -> None:
    """Options of every benchmark; ``systems`` are the default ones."""
    p.add_argument("--models", default="resnet18,resnet50", help=f"from {sorted(models)}")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--systems", default=",".join(systems), help="comma-separated system names")
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per system first")
    p.add_argument(
        "--block-seconds",
        type=float,
        default=2.0,
        help="budget of one system's block of calls",
    )
    p.add_argument("--max-iters", type=int, default=20, help="max calls per block")
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for every system (default: CPUs this process may use)",
    )
    p.add_argument("--mcpu", default="auto", help="LLVM -mcpu for TVM (default: this host's)")
    p.add_argument("--out", type=Path, default=Path(out))


def prepare(args: argparse.Namespace, known_models: Iterable[str]) -> tuple[list[str], str]:
    """Checked model names and the TVM mcpu; sets the process up for ``args.threads``."""
    models = parse_list(args.models)
    unknown = [m for m in models if m not in known_models]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; choose from {sorted(known_models)}")
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
    return models, mcpu


def run_all(
    args: argparse.Namespace,
    benchmark: str,
    models: list[str],
    mcpu: str,
    systems: list[System],
    make_workload: Callable[[str, int], Workload],
    reference: str,
) -> int:
    """Time ``systems`` on every model x batch; print the table and write the JSON."""
    meta = {
        "benchmark": benchmark,
        "argv": sys.argv,
        "options": {k: str(v) for k, v in vars(args).items()} | {"mcpu": mcpu},
    }
    results: list[Result] = []
    for name in models:
        for batch in (int(b) for b in parse_list(args.batches)):
            print(f"\n[{name} batch {batch}]", flush=True)
            results += run_workload(
                make_workload(name, batch),
                systems,
                threads=args.threads,
                rounds=args.rounds,
                warmup=args.warmup,
                block_seconds=args.block_seconds,
                max_iters=args.max_iters,
                reference=reference,
                log=lambda line: print(line, flush=True),
            )
            # After every workload, so partial runs survive; machine info last, as the
            # runtimes may have set thread variables on import.
            write_json(args.out, meta | {"machine": machine_info(args.threads)}, results)
    print(format_table(results))
    print(f"\nwrote {args.out}")
    return 0
