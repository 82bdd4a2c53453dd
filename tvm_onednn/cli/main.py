"""Entry point of the ``tvm-onednn`` console script (also ``python -m tvm_onednn``).

Argument parsing only: every subcommand calls one function of
:mod:`tvm_onednn.interface` and prints what it returns. Bad input (a missing file, an
unknown input name, a bad shape or target, calibration data that does not fit) ends with
one message on stderr and exit code 2; an unexpected failure with one message and exit
code 1 (``TVM_ONEDNN_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    print(
        run_demo(
            batches=args.batch, repeats=args.repeats, calib_mode=args.calib_mode,
            threads=args.threads,
        )
    )  # fmt: skip
    return 0


def _compile(args: argparse.Namespace) -> int:
    from ..interface import QuantizeOptions, compile_onnx, parse_input_shapes
    from ..interface.io import InputError

    calib_flags = [args.calib_data, args.num_calib_batches, args.exclude_layers,
                   args.validation_data, args.max_drop]  # fmt: skip
    if args.quantize is None and any(f is not None for f in calib_flags):
        raise InputError(
            "--calib-data, --num-calib-batches, --exclude-layers, --validation-data and "
            "--max-drop need --quantize int8"
        )
    quantize = None
    if args.quantize is not None:
        quantize = QuantizeOptions(
            calib_data=args.calib_data,
            calib_mode=args.calib_mode,
            num_calib_batches=args.num_calib_batches,
            exclude_layers=args.exclude_layers or (),
            validation_data=args.validation_data,
            max_drop=args.max_drop,
            bias_correction=args.bias_correction,
            float_stem=args.float_stem,
            float_matmul_math=args.float_matmul_math,
        )
    result = compile_onnx(
        args.model,
        args.output,
        input_shapes=parse_input_shapes(args.input_shapes),
        target=args.target,
        quantize=quantize,
        tuning_records=args.tuning_records or (),
        dump_ir=args.dump_ir,
    )
    print(result)
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..interface import run_library

    result = run_library(
        args.library,
        args.inputs,
        output=args.output,
        print_top=args.print_top,
        profile=args.profile,
        profile_runs=args.profile_runs,
    )
    print(result)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from ..interface import parse_input_shapes, tune_onnx
    from ..interface.progress import TerminalProgress

    progress = TerminalProgress()
    try:
        report = tune_onnx(
            args.model,
            args.work_dir,
            args.trials,
            input_shapes=parse_input_shapes(args.input_shapes),
            target=args.target,
            max_trials_per_task=args.max_trials_per_task,
            num_trials_per_iter=args.trials_per_iter,
            seed=args.seed,
            progress=progress,
            rpc_tracker=args.rpc_tracker,
            rpc_key=args.rpc_key,
            rpc_timeout=args.rpc_timeout,
        )
    finally:
        progress.close()
    print(report)
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from ..interface import benchmark, parse_input_shapes

    report = benchmark(
        args.model,
        batches=args.batch or (),
        compare=args.compare or (),
        plot=args.plot,
        input_shapes=parse_input_shapes(args.input_shapes),
        target=args.target,
        tuning_records=args.tuning_records or (),
        rounds=args.rounds,
        block=args.block,
        threads=args.threads,
    )
    print(report)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from ..interface import inspect_model, parse_input_shapes

    result = inspect_model(args.model, parse_input_shapes(args.input_shapes))
    print(json.dumps(result.as_dict(), indent=2) if args.json else result)
    return 0


def _add_model_options(p: argparse.ArgumentParser, target: bool = True) -> None:
    p.add_argument(
        "--input-shapes",
        nargs="+",
        action="extend",
        metavar="NAME:DIMS",
        help="static input shapes, e.g. data:1,3,224,224 (default: as declared in the model; "
        "a dynamic batch axis stays dynamic)",
    )
    if target:
        p.add_argument(
            "--target",
            metavar="JSON",
            help='TVM target as JSON (or a file holding it), e.g. \'{"kind": "llvm", '
            '"mcpu": "znver3"}\'; default: this CPU',
        )


def cli_calib_modes() -> list[str]:
    """``--calib-mode`` choices: ``auto``, the collectors registered now
    (``tvm_onednn.calib.register_collector``), then ``none``. ``custom`` needs a collector
    instance, which a command line cannot pass: register the class under a name instead."""
    from ..interface.compile import calib_modes

    return calib_modes()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvm-onednn",
        description="Compile, tune, run and benchmark ONNX models with TVM + oneDNN.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("compile", help="ONNX -> exported shared library (.so)")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.so")
    _add_model_options(p)
    p.add_argument("--quantize", choices=["int8"], help="post-training int8 quantization")
    p.add_argument(
        "--calib-data",
        metavar="NPZ|DIR",
        help="calibration samples: an .npz keyed by input name (leading sample axis) or a "
        "directory of .npy/.npz files",
    )
    modes = cli_calib_modes()
    p.add_argument(
        "--calib-mode",
        choices=modes,
        default="auto",
        help=f"how ranges are chosen: {', '.join(modes)}. auto (default): none for models "
        "whose quantized layers are all matmuls (transformers: more accurate), else entropy "
        "(MXNet's default, the most accurate on held-out images); none: ranges computed at "
        "run time, no data; the others are the registered collectors",
    )
    p.add_argument("--num-calib-batches", type=int, metavar="N", help="use at most N batches")
    p.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="do not shift int8 biases by the mean error of their weight rounding",
    )
    p.add_argument(
        "--no-float-stem",
        dest="float_stem",
        action="store_false",
        help="quantize a MobileNet-like stem (first conv + the depthwise conv it feeds) too",
    )
    p.add_argument(
        "--float-matmul-math",
        choices=("bf16", "f32"),
        default="bf16",
        help="math of the float32 matmuls of two activations in an int8 model (attention): "
        "bf16 (default) lets oneDNN use bfloat16 operands on AMX CPUs where the runtime does "
        "not fuse them into its float32 attention kernel; f32 keeps float32",
    )
    p.add_argument(
        "--exclude-layers",
        nargs="+",
        action="extend",
        metavar="LAYER",
        help="layers kept in float32",
    )
    p.add_argument(
        "--validation-data",
        metavar="NPZ|DIR",
        help="accuracy control: samples (as --calib-data) on which int8 must keep the float32 "
        "top-1 within --max-drop; the most sensitive layers stay float32",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        metavar="D",
        help="largest top-1 agreement drop allowed (default 0.01; needs --validation-data)",
    )
    p.add_argument(
        "--tuning-records",
        nargs="+",
        action="extend",
        metavar="WORK_DIR",
        help="tuning work directories (best record per kernel across them)",
    )
    p.add_argument("--dump-ir", metavar="DIR", help="write the IR after each phase to DIR")
    p.set_defaults(handler=_compile)

    p = commands.add_parser(
        "run", help="run an exported model on inputs from an .npz (any batch it takes)"
    )
    p.add_argument("library", metavar="OUT.so")
    p.add_argument("--inputs", required=True, metavar="IN.npz", help="arrays keyed by input name")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="save the outputs")
    p.add_argument(
        "--print-top", type=int, nargs="?", const=5, metavar="K", help="top-K classes (default 5)"
    )
    p.add_argument("--profile", action="store_true", help="time every oneDNN region / TVM kernel")
    p.add_argument("--profile-runs", type=int, default=10, metavar="N")
    p.set_defaults(handler=_run)

    p = commands.add_parser("tune", help="MetaSchedule tuning of what stays with TVM")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--work-dir", required=True, metavar="DIR", help="tuning records (appended)")
    p.add_argument("--trials", required=True, type=int, metavar="N", help="trials over all tasks")
    _add_model_options(p)
    p.add_argument("--max-trials-per-task", type=int, metavar="N")
    p.add_argument("--trials-per-iter", type=int, default=8, metavar="N")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--rpc-tracker",
        metavar="HOST:PORT",
        help="measure on the servers of a TVM RPC tracker (python -m tvm.exec.rpc_tracker); "
        "--target must describe their CPU",
    )
    p.add_argument("--rpc-key", metavar="KEY", help="the servers' --key (with --rpc-tracker)")
    p.add_argument(
        "--rpc-timeout",
        type=float,
        metavar="S",
        help="seconds one remote measurement may take (default 60)",
    )
    p.set_defaults(handler=_tune)

    p = commands.add_parser(
        "benchmark", help="median latency, items/s and first-call latency per batch size"
    )
    p.add_argument("model", metavar="MODEL.onnx|OUT.so")
    p.add_argument(
        "--batch",
        type=int,
        nargs="+",
        action="extend",
        metavar="B",
        help="batch sizes; a library with a dynamic batch (or an ONNX model with a dynamic "
        "batch axis, compiled once) runs them all (default: its own batch, else 1)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        action="extend",
        choices=["onnxruntime", "untuned"],
        help="also time ONNX Runtime / the build without --tuning-records",
    )
    p.add_argument("--plot", metavar="OUT.png", help="bar chart (needs matplotlib)")
    _add_model_options(p)
    p.add_argument("--tuning-records", nargs="+", action="extend", metavar="WORK_DIR")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--block", type=int, default=5, help="calls per system per round")
    p.add_argument("--threads", type=int, help="threads for every system (default: all cores)")
    p.set_defaults(handler=_benchmark)

    p = commands.add_parser("inspect", help="what goes to oneDNN, what stays with TVM, and why")
    p.add_argument("model", metavar="MODEL.onnx")
    _add_model_options(p, target=False)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=_inspect)

    p = commands.add_parser(
        "demo",
        help="MobileNetV2 (ImageNet weights) compiled once with a dynamic batch, fp32 and "
        "int8: top-5 of bundled photos, latency vs ONNX Runtime",
    )
    p.add_argument(
        "--batch", type=int, nargs="+", default=[1, 8], metavar="B",
        help="batch sizes run from the same libraries (default: 1 8)",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=10, help="timed calls per system and batch")
    p.add_argument(
        "--calib-mode", choices=["naive", "entropy", "percentile"], default="percentile",
        help="int8 calibration (default: percentile)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, help="threads (default: all cores)")
    p.set_defaults(handler=_demo)
    return parser


def _last_line(err: BaseException) -> str:
    """TVM errors carry a C++/Python backtrace in their text: keep the message."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = os.environ.get("TVM_ONEDNN_DEBUG", "") not in ("", "0")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"tvm-onednn {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        if debug:
            raise
        print(f"tvm-onednn {args.command}: error: {_last_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else is ours: one line, traceback on request
        if debug:
            raise
        print(
            f"tvm-onednn {args.command}: internal error ({type(err).__name__}): "
            f"{_last_line(err)} (TVM_ONEDNN_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
