"""Bad input: one clear message on stderr, a non-zero exit code, never a traceback."""

import subprocess
import sys

import numpy as np
import pytest

from tvm_onednn.cli.main import main
from tvm_onednn.interface import benchmarking

from .helpers import fails


def test_missing_model(tmp_path, capsys):
    fails(["compile", tmp_path / "nope.onnx", "-o", tmp_path / "m.so"], capsys, "nope.onnx")
    fails(["inspect", tmp_path / "nope.onnx"], capsys, "no ONNX model")
    fails(["tune", tmp_path / "nope.onnx", "--work-dir", tmp_path / "w", "--trials", 8], capsys)
    fails(["benchmark", tmp_path / "nope.onnx"], capsys, "nope.onnx")


def test_not_an_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf")
    fails(["inspect", bad], capsys, "not a readable ONNX model")


def test_unknown_input_name(model_dir, tmp_path, capsys):
    argv = ["compile", model_dir / "small.onnx", "-o", tmp_path / "m.so"]
    fails(argv + ["--input-shapes", "image:1,3,32,32"], capsys, "unknown input", "'data'")


@pytest.mark.parametrize("shape", ["data:1,3,a,32", "data", "data:1,3"])
def test_bad_shape(model_dir, tmp_path, capsys, shape):
    argv = ["inspect", model_dir / "small.onnx", "--input-shapes", shape]
    fails(argv, capsys, "data")


def test_dynamic_shape_stays_free_unless_fixed(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "dyn.onnx")
    assert main(["inspect", str(tmp_path / "dyn.onnx")]) == 0
    assert "inputs: x:[N, 3] float32" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "dyn.onnx"), "--input-shapes", "x:4,3"]) == 0
    assert "inputs: x:[4, 3] float32" in capsys.readouterr().out
    fails(["inspect", tmp_path / "dyn.onnx", "--input-shapes", "x:4,3,1"], capsys, "rank")


def test_bad_target(model_dir, tmp_path, capsys):
    argv = ["compile", model_dir / "small.onnx", "-o", tmp_path / "m.so", "--target"]
    fails(argv + ["llvm -mcpu=skylake"], capsys, "JSON")
    fails(argv + ['{"kind": "llvm", "mcpux": "skylake"}'], capsys, "invalid target")


def test_output_directory_missing(model_dir, tmp_path, capsys):
    argv = ["compile", model_dir / "small.onnx", "-o", tmp_path / "no" / "m.so"]
    fails(argv, capsys, "does not exist")


def test_calibration_options(model_dir, tmp_path, capsys):
    base = ["compile", model_dir / "small.onnx", "-o", tmp_path / "m.so"]
    fails(base + ["--calib-data", model_dir / "calib.npz"], capsys, "--quantize int8")
    fails(base + ["--quantize", "int8"], capsys, "--calib-data")
    fails(base + ["--quantize", "int8", "--calib-data", tmp_path / "nowhere"], capsys, "nowhere")


def test_calibration_data_that_does_not_fit(model_dir, tmp_path, capsys):
    base = ["compile", model_dir / "small.onnx", "-o", tmp_path / "m.so", "--quantize", "int8"]
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, data=np.zeros((4, 3, 16, 16), "float32"))
    fails(base + ["--calib-data", wrong_shape], capsys, "[4, 3, 16, 16]", "[N, 3, 32, 32]")
    wrong_name = tmp_path / "name.npz"
    np.savez(wrong_name, image=np.zeros((4, 3, 32, 32), "float32"))
    fails(base + ["--calib-data", wrong_name], capsys, "image", "data")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(base + ["--calib-data", empty], capsys, "no .npy/.npz")
    too_few = tmp_path / "few.npz"
    np.savez(too_few, data=np.zeros((0, 3, 32, 32), "float32"))
    fails(base + ["--calib-data", too_few], capsys, "sample")


def test_quantize_unavailable_is_a_clear_error(model_dir, tmp_path, capsys, monkeypatch):
    """Until tvm_onednn.quantize exists (or if it fails to import), --quantize says so."""
    import builtins

    real_import = builtins.__import__

    def no_quantize(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "quantize" and level == 2 or name == "tvm_onednn.quantize":
            raise ImportError("No module named 'tvm_onednn.quantize'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_quantize)
    argv = ["compile", model_dir / "small.onnx", "-o", tmp_path / "m.so", "--quantize", "int8"]
    fails(argv + ["--calib-data", model_dir / "calib.npz"], capsys, "not available")


def test_tuning_records_missing(model_dir, tmp_path, capsys):
    argv = ["compile", model_dir / "small.onnx", "-o", tmp_path / "m.so"]
    fails(argv + ["--tuning-records", tmp_path / "nowhere"], capsys, "nowhere")
    empty = tmp_path / "empty_work_dir"
    empty.mkdir()
    fails(argv + ["--tuning-records", empty], capsys, "no tuning records")


def test_run_bad_inputs(compiled, tmp_path, capsys):
    fails(["run", tmp_path / "nope.so", "--inputs", tmp_path / "in.npz"], capsys, "nope.so")
    fails(["run", compiled, "--inputs", tmp_path / "nope.npz"], capsys, "nope.npz")
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, data=np.zeros((1, 3, 16, 16), "float32"))
    fails(["run", compiled, "--inputs", wrong_shape], capsys, "[1, 3, 16, 16]", "[1, 3, 32, 32]")
    wrong_name = tmp_path / "name.npz"
    np.savez(wrong_name, image=np.zeros((1, 3, 32, 32), "float32"))
    fails(["run", compiled, "--inputs", wrong_name], capsys, "unknown input", "image")
    not_npz = tmp_path / "garbage.npz"
    not_npz.write_text("garbage")
    fails(["run", compiled, "--inputs", not_npz], capsys, "garbage.npz")
    fails(["run", compiled, "--inputs", wrong_shape, "--print-top", "0"], capsys, "print-top")


def test_benchmark_bad_options(model_dir, compiled, tmp_path, capsys, monkeypatch):
    fails(["benchmark", compiled, "--compare", "onnxruntime"], capsys, "ONNX model")
    fails(["benchmark", compiled, "--batch", "7"], capsys, "batch 1")
    onnx_model = model_dir / "small.onnx"
    fails(["benchmark", onnx_model, "--compare", "untuned"], capsys, "--tuning-records")
    monkeypatch.setattr(benchmarking, "plot_available", lambda: False)
    fails(["benchmark", compiled, "--plot", tmp_path / "p.png"], capsys, "matplotlib")


def test_tune_bad_options(model_dir, tmp_path, capsys):
    base = ["tune", model_dir / "small.onnx", "--work-dir", tmp_path / "w"]
    fails(base + ["--trials", 0], capsys, "--trials")
    fails(base + ["--trials", 8, "--target", "{"], capsys, "JSON")
    a_file = tmp_path / "file"
    a_file.write_text("")
    fails(["tune", model_dir / "small.onnx", "--work-dir", a_file, "--trials", 8], capsys, "file")


def test_console_script_in_a_fresh_process(tmp_path):
    """``python -m tvm_onednn`` exits 2 with one line on stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "tvm_onednn", "compile", str(tmp_path / "nope.onnx"), "-o",
         str(tmp_path / "m.so")],
        capture_output=True,
        check=False, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"tvm-onednn compile: error: no ONNX model at '{tmp_path / 'nope.onnx'}'"
    ]
