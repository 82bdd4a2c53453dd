"""The command line end to end on the bundled small ResNet.

``tvm-onednn`` takes the place of ``tvmc`` (removed from TVM in v0.20). This script writes
the bundled model, an input and calibration samples to a directory, then runs::

    tvm-onednn inspect   small_resnet.onnx
    tvm-onednn compile   small_resnet.onnx -o model.so
    tvm-onednn run       model.so --inputs input.npz --print-top 3 -o output.npz
    tvm-onednn compile   small_resnet.onnx -o model_int8.so --quantize int8 \\
                         --calib-data calib.npz --calib-mode entropy
    tvm-onednn run       model_int8.so --inputs input.npz --print-top 3
    tvm-onednn benchmark small_resnet.onnx --batch 1 8 --compare onnxruntime

(each as ``python -m tvm_onednn ...``, which is the same program). ``--fast`` (CI) skips
``inspect`` and ``benchmark``.

    python tutorials/command_line.py [--fast] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx


def tvm_onednn(*args: str, cwd: Path) -> None:
    """Run one ``tvm-onednn`` command, echoing it like a shell session."""
    print(f"\n$ tvm-onednn {shlex.join(args)}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "tvm_onednn", *args], cwd=cwd, env=_env(), check=False
    )
    if result.returncode != 0:
        sys.exit(f"tvm-onednn {args[0]} failed with exit code {result.returncode}")


def _env() -> dict:
    """This environment, with the tvm_onednn we import findable from any directory."""
    import tvm_onednn

    package_root = str(Path(tvm_onednn.__file__).resolve().parent.parent)
    paths = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def write_files(directory: Path) -> None:
    """The model (ONNX), one input and 32 calibration samples (.npz keyed by input name)."""
    from tvm_onednn.models import small_resnet_onnx

    onnx.save(small_resnet_onnx(batch=1), directory / "small_resnet.onnx")
    rng = np.random.default_rng(0)
    np.savez(directory / "input.npz", data=rng.standard_normal((1, 3, 32, 32)).astype("float32"))
    samples = rng.standard_normal((32, 3, 32, 32)).astype("float32")
    np.savez(directory / "calib.npz", data=samples)  # leading axis: samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="skip inspect and benchmark (CI)")
    parser.add_argument("--dir", type=Path, help="where to write files (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        write_files(work)
        if not args.fast:
            tvm_onednn("inspect", "small_resnet.onnx", cwd=work)
        tvm_onednn("compile", "small_resnet.onnx", "-o", "model.so", cwd=work)
        tvm_onednn("run", "model.so", "--inputs", "input.npz", "--print-top", "3",
                   "-o", "output.npz", cwd=work)  # fmt: skip
        tvm_onednn("compile", "small_resnet.onnx", "-o", "model_int8.so", "--quantize", "int8",
                   "--calib-data", "calib.npz", "--calib-mode", "entropy", cwd=work)  # fmt: skip
        tvm_onednn("run", "model_int8.so", "--inputs", "input.npz", "--print-top", "3", cwd=work)
        if not args.fast:
            tvm_onednn("benchmark", "small_resnet.onnx", "--batch", "1", "8",
                       "--compare", "onnxruntime", cwd=work)  # fmt: skip
        outputs = np.load(work / "output.npz")
        print(f"\noutput.npz holds {sorted(outputs.files)}: {outputs['output_0'].shape}")


if __name__ == "__main__":
    main()
