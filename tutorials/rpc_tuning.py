"""Tuning over TVM's RPC tracker: a tracker and two servers, tune, compile with the records.

Candidates are built in this process's build workers and measured on RPC servers
registered with TVM's tracker under a key (MetaSchedule's ``RPCRunner``). Here the tracker
and both servers run on this machine (TVM's own commands, started as subprocesses and
stopped at the end); on real machines run the same commands there::

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190 --port-end 9191
    python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090 --port-end 9091 \\
        --tracker TRACKER_HOST:9190 --key my-cpu          # on every measuring machine
    tvm-onednn tune model.onnx --work-dir W --trials 256 \\
        --rpc-tracker TRACKER_HOST:9190 --rpc-key my-cpu --target '{"kind": "llvm",
        "mcpu": "znver3", "num-cores": 8}'               # the measuring machines' CPU
    tvm-onednn compile model.onnx -o model.so --tuning-records W

A server needs TVM only (tuning tasks are what stays with TVM, not oneDNN regions):
``apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1`` (plus ``tornado`` where the
tracker runs) and a C compiler (``cc``/``g++``: the server links each uploaded candidate).

    python tutorials/rpc_tuning.py                     # encoder block, 64 trials, + local
    python tutorials/rpc_tuning.py --fast              # small block, 8 trials (CI)
    python tutorials/rpc_tuning.py --tracker H:P --key K   # use a running tracker
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile

import numpy as np
import tvm
from tvm import relax

import tvm_onednn
from tvm_onednn.interface.benchmarking import interleaved
from tvm_onednn.models import encoder_block_onnx
from tvm_onednn.target import host_target_spec
from tvm_onednn.tuning import check_tracker
from tvm_onednn.tuning.local_rpc import local_tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small block, 8 trials (CI)")
    parser.add_argument("--trials", type=int, help="tuning trials (default 64, --fast 8)")
    parser.add_argument("--tracker", metavar="HOST:PORT", help="a running tracker")
    parser.add_argument("--key", default="tvm-onednn-tutorial", help="the servers' key")
    parser.add_argument(
        "--local", action="store_true", default=None, help="also tune locally (default: not --fast)"
    )
    args = parser.parse_args()
    trials = args.trials or (8 if args.fast else 64)
    compare_local = (not args.fast) if args.local is None else args.local
    threads = 1  # measured and run with one thread: the servers share this machine
    tvm_onednn.set_num_threads(threads)
    # On real servers: their CPU ("mcpu") and the threads to measure with ("num-cores").
    target = {**host_target_spec(), "num-cores": threads}
    if args.fast:
        model = encoder_block_onnx(seq=32, hidden=64, heads=2, ffn=128, log_softmax_head=True)
    else:
        model = encoder_block_onnx(log_softmax_head=True)
    mod = tvm_onednn.from_onnx(model)

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        tracker = args.tracker or stack.enter_context(local_tracker(args.key, echo=True))
        print(check_tracker(tracker, args.key))
        rpc_dir = os.path.join(tmp, "rpc")
        report = tvm_onednn.tune(
            mod, target, rpc_dir, trials, seed=0, rpc_tracker=tracker, rpc_key=args.key
        )
        print(report)
        builds = {
            "untuned": tvm_onednn.compile_model(mod, target),
            "rpc-tuned": tvm_onednn.compile_model(mod, target, tuning_records=[rpc_dir]),
        }
        if compare_local:
            local_dir = os.path.join(tmp, "local")
            print(tvm_onednn.tune(mod, target, local_dir, trials, seed=0))
            builds["local-tuned"] = tvm_onednn.compile_model(
                mod, target, tuning_records=[local_dir]
            )

    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"))
    mains = {name: relax.VirtualMachine(ex, tvm.cpu())["main"] for name, ex in builds.items()}
    outputs = {name: f(x).numpy() for name, f in mains.items()}
    samples = interleaved({n: (lambda f=f: f(x)) for n, f in mains.items()}, rounds=10, block=10)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    for name, ms in medians.items():
        print(f"{name:>11}: {ms:8.3f} ms (median of {len(samples[name])} interleaved calls)")
    diff = max(np.abs(out - outputs["untuned"]).max() for out in outputs.values())
    print(f"rpc-tuned vs untuned: {medians['untuned'] / medians['rpc-tuned']:.2f}x; "
          f"max |difference| {diff:.1e}")  # fmt: skip
    if "local-tuned" in medians:
        print(f"local-tuned vs untuned: {medians['untuned'] / medians['local-tuned']:.2f}x")


if __name__ == "__main__":
    main()
