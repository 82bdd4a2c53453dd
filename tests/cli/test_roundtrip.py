"""compile -> run on the bundled small ResNet, checked against onnxruntime; inspect; benchmark."""

import json

import numpy as np
import pytest

from tvm_onednn.cli.main import main

from .helpers import table_rows

ort = pytest.importorskip("onnxruntime")


def _onnxruntime(model_path, feeds):
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)



def test_compile_run_matches_onnxruntime(model_dir, compiled, tmp_path, capsys):
    out = tmp_path / "out.npz"
    argv = ["run", str(compiled), "--inputs", str(model_dir / "in.npz"), "-o", str(out)]
    assert main(argv + ["--print-top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "output 0 item 0 top-3:" in printed
    actual = np.load(out)["output_0"]
    expected = _onnxruntime(model_dir / "small.onnx", dict(np.load(model_dir / "in.npz")))[0]
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)
    top = int(printed.split("top-3:")[1].split(":")[0])
    assert top == int(expected[0].argmax())


def test_run_profile(model_dir, compiled, capsys):
    argv = ["run", str(compiled), "--inputs", str(model_dir / "in.npz"), "--profile"]
    assert main(argv + ["--profile-runs", "3"]) == 0
    printed = capsys.readouterr().out
    assert "profile: 3 run(s)" in printed
    assert "onednn_0" in printed and "by backend:" in printed and "oneDNN" in printed


def test_compile_prints_summary_and_dumps_ir(model_dir, tmp_path, capsys):
    out, ir = tmp_path / "m.so", tmp_path / "ir"
    argv = ["compile", str(model_dir / "small.onnx"), "-o", str(out), "--dump-ir", str(ir)]
    assert main(argv + ["--input-shapes", "data:2,3,32,32"]) == 0
    printed = capsys.readouterr().out
    assert "inputs: data:[2, 3, 32, 32] float32" in printed
    assert "onednn.conv2d_bias_relu" in printed and f"wrote {out}" in printed
    assert sorted(p.name for p in ir.iterdir()) == [
        "00_imported.py", "01_partitioned.py", "02_offloaded.py", "03_legalized.py",
        "04_tuned.py", "05_lowered.py", "summary.txt"
    ]  # fmt: skip
    assert "Codegen" in (ir / "01_partitioned.py").read_text()
    # The batch-2 library checks its inputs against the shape it was compiled for.
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype("float32")
    np.savez(tmp_path / "in2.npz", data=x)
    assert main(["run", str(out), "--inputs", str(tmp_path / "in2.npz")]) == 0
    assert "shape [2, 10]" in capsys.readouterr().out


def test_inspect(model_dir, capsys):
    assert main(["inspect", str(model_dir / "small.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "inputs: data:[1, 3, 32, 32] float32" in printed
    assert "oneDNN regions:" in printed and "onednn.conv2d_bias_add_relu" in printed
    assert main(["inspect", str(model_dir / "small.onnx"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"] == [{"name": "data", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert data["offload"]["offloaded_ops"]["relax.nn.conv2d"] == 6
    assert "relax.nn.conv2d" not in data["offload"]["kept_ops"]


def test_benchmark_library_and_onnx(model_dir, compiled, capsys):
    assert main(["benchmark", str(compiled), "--rounds", "1", "--block", "2"]) == 0
    printed = capsys.readouterr().out
    assert "items/s" in printed and "one library, one batch" in printed
    assert set(table_rows(printed)) == {("tvm-onednn", 1)}
    argv = ["benchmark", str(model_dir / "small.onnx"), "--compare", "onnxruntime"]
    assert main(argv + ["--batch", "2", "--rounds", "1", "--block", "2"]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert set(rows) == {("tvm-onednn", 2), ("onnxruntime", 2)}
    assert rows["tvm-onednn", 2][-1].endswith("x") and float(rows["tvm-onednn", 2][4]) > 0
    assert "one build per batch" in printed
    diff = float(printed.split("onnxruntime| = ")[1].split()[0])
    assert diff < 1e-3


def test_int8_compile_and_run(model_dir, tmp_path, capsys):
    """--quantize int8 with calibration from a directory of .npy files."""
    calib = tmp_path / "calib"
    calib.mkdir()
    samples = np.load(model_dir / "calib.npz")["data"]
    for i in range(2):
        np.save(calib / f"part{i}.npy", samples[4 * i : 4 * i + 4])
    out = tmp_path / "int8.so"
    argv = ["compile", str(model_dir / "small.onnx"), "-o", str(out), "--quantize", "int8"]
    assert main(argv + ["--calib-data", str(calib), "--num-calib-batches", "4"]) == 0
    printed = capsys.readouterr().out
    assert "compiled int8 model" in printed and "onednn.qconv2d" in printed
    result = tmp_path / "int8_out.npz"
    assert main(["run", str(out), "--inputs", str(model_dir / "in.npz"), "-o", str(result)]) == 0
    actual = np.load(result)["output_0"]
    expected = _onnxruntime(model_dir / "small.onnx", dict(np.load(model_dir / "in.npz")))[0]
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=0.1 * scale)  # int8 vs fp32


def test_benchmark_plot(compiled, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "bench.png"
    argv = ["benchmark", str(compiled), "--rounds", "1", "--block", "2", "--plot", str(plot)]
    assert main(argv) == 0
    assert plot.stat().st_size > 0 and f"wrote {plot}" in capsys.readouterr().out
