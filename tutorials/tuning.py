"""A short MetaSchedule tuning session on a transformer encoder block with a LogSoftmax head.

After the oneDNN offload the whole encoder block (matmuls, softmax, layer norms, GELU, head
transposes) runs in one oneDNN region; what stays with TVM is the LogSoftmax head, for
which oneDNN has no pattern. Untuned, TVM's kernel for it is a plain loop (one thread, no
vectorization). ``tvm_onednn.tune``
tunes exactly those (oneDNN regions are not tuning tasks) with MetaSchedule's
evolutionary search and XGBoost cost model, and ``compile_model(...,
tuning_records=[work_dir])`` builds with the best schedule found for each kernel.

    python tutorials/tuning.py                    # the encoder block, 128 trials
    python tutorials/tuning.py --fast             # a small block, 16 trials, 1 thread (CI)
    python tutorials/tuning.py --work-dir tuning  # keep the records; run again to add more

Kernels are tuned for, measured with and run with ``--threads`` threads (the target's
``num-cores``). On a machine shared with other jobs, multi-threaded timings of such small
kernels mostly measure how long the OS takes to schedule the pool's threads; ``--fast``
therefore uses one.

The command line does the same: ``tvm-onednn tune block.onnx --work-dir W --trials N``,
then ``tvm-onednn compile block.onnx -o block.so --tuning-records W``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np
import tvm
from tvm import relax

import tvm_onednn
from tvm_onednn.interface.benchmarking import interleaved
from tvm_onednn.interface.progress import TerminalProgress
from tvm_onednn.models import encoder_block_onnx
from tvm_onednn.target import host_target_spec
from tvm_onednn.threads import default_num_threads
from tvm_onednn.tuning import tuned_kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small block, few trials (CI)")
    parser.add_argument("--trials", type=int, help="tuning trials (default 128, --fast 16)")
    parser.add_argument("--work-dir", help="tuning records (default: a temporary directory)")
    parser.add_argument("--threads", type=int, help="threads (default: all cores; --fast 1)")
    args = parser.parse_args()
    trials = args.trials or (16 if args.fast else 128)
    threads = args.threads or (1 if args.fast else default_num_threads())
    tvm_onednn.set_num_threads(threads)  # oneDNN's and TVM's threads in this process
    target = {**host_target_spec(), "num-cores": threads}
    if args.fast:
        model = encoder_block_onnx(seq=32, hidden=64, heads=2, ffn=128, log_softmax_head=True)
    else:
        model = encoder_block_onnx(log_softmax_head=True)  # seq 128, hidden 256, 4 heads, FFN 1024
    mod = tvm_onednn.from_onnx(model)
    print(tvm_onednn.offload_summary(mod))

    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or tmp
        progress = TerminalProgress()  # a progress bar when stderr is a terminal
        report = tvm_onednn.tune(mod, target, work_dir, trials, seed=0, progress=progress)
        progress.close()
        print(report)
        tuned, untuned = tuned_kernels(mod, target, [work_dir])
        print(f"kernels with a tuned schedule: {tuned}; without: {untuned}")
        builds = {
            "untuned": tvm_onednn.compile_model(mod, target),
            "tuned": tvm_onednn.compile_model(mod, target, tuning_records=[work_dir]),
        }

    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"))
    mains = {name: relax.VirtualMachine(ex, tvm.cpu())["main"] for name, ex in builds.items()}
    outputs = {name: f(x).numpy() for name, f in mains.items()}
    # Interleaved rounds: load from other processes hits both builds alike.
    samples = interleaved({n: (lambda f=f: f(x)) for n, f in mains.items()}, rounds=10, block=10)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    for name, ms in medians.items():
        print(f"{name:>8}: {ms:8.3f} ms (median of {len(samples[name])} interleaved calls)")
    print(f"tuned vs untuned: {medians['untuned'] / medians['tuned']:.2f}x; "
          f"max |difference| {np.abs(outputs['tuned'] - outputs['untuned']).max():.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
