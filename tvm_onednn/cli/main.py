"""Entry point of the ``tvm-onednn`` console script (also ``python -m tvm_onednn``)."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    print(run_demo(batch=args.batch, image_size=args.image_size, repeats=args.repeats))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvm-onednn", description="Compile and run ONNX models with TVM + oneDNN."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="build the bundled small ResNet with TVM and with oneDNN; compare"
    )
    demo.add_argument("--batch", type=int, default=1)
    demo.add_argument("--image-size", type=int, default=32)
    demo.add_argument("--repeats", type=int, default=20)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:
        print(f"tvm-onednn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
