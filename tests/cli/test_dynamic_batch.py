"""A model with a dynamic batch axis: compiled once, run and benchmarked at several batches.

The bundled small ResNet (GlobalAveragePool -> Flatten -> Gemm, nothing tied to the batch)
with its batch axis renamed ``batch``; every output is checked against onnxruntime on the
same ONNX model.
"""

import json

import numpy as np
import onnx
import pytest

from tvm_onednn.cli.main import main
from tvm_onednn.interface.io import dynamic_batch
from tvm_onednn.models.resnet import small_resnet_onnx

from .helpers import fails, table_rows

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def dyn_dir(tmp_path_factory):
    """dyn.onnx (batch axis free), dyn.so compiled from it without --input-shapes."""
    d = tmp_path_factory.mktemp("cli_dynamic")
    onnx.save(dynamic_batch(small_resnet_onnx()), d / "dyn.onnx")
    assert main(["compile", str(d / "dyn.onnx"), "-o", str(d / "dyn.so")]) == 0
    return d


def _onnxruntime(model_path, x):
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"data": x})[0]


def _run(library, x, tmp_path, name="in"):
    np.savez(tmp_path / f"{name}.npz", data=x)
    out = tmp_path / f"{name}_out.npz"
    argv = ["run", str(library), "--inputs", str(tmp_path / f"{name}.npz"), "-o", str(out)]
    assert main(argv) == 0
    return np.load(out)["output_0"]


@pytest.mark.parametrize("batch", [1, 4])
def test_one_library_runs_every_batch(dyn_dir, tmp_path, batch, capsys):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype("float32")
    actual = _run(dyn_dir / "dyn.so", x, tmp_path)
    takes = f"inputs: data:[{batch}, 3, 32, 32] (the library takes data:[batch, 3, 32, 32])"
    assert takes in capsys.readouterr().out
    expected = _onnxruntime(dyn_dir / "dyn.onnx", x)
    assert actual.shape == expected.shape == (batch, 10)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * float(np.abs(expected).max()))


def test_compile_reports_the_free_dim(dyn_dir, tmp_path, capsys):
    out = tmp_path / "again.so"
    assert main(["compile", str(dyn_dir / "dyn.onnx"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inputs: data:[batch, 3, 32, 32] float32 (batch: any size)" in printed
    # --input-shapes fixes the batch, as before: that library takes batch 2 only.
    static = tmp_path / "b2.so"
    argv = ["compile", str(dyn_dir / "dyn.onnx"), "-o", str(static), "--input-shapes"]
    assert main(argv + ["data:2,3,32,32"]) == 0
    assert "inputs: data:[2, 3, 32, 32] float32\n" in capsys.readouterr().out
    x = np.zeros((3, 3, 32, 32), "float32")
    np.savez(tmp_path / "b3.npz", data=x)
    fails(["run", static, "--inputs", tmp_path / "b3.npz"], capsys,
           "[3, 3, 32, 32]", "[2, 3, 32, 32]", "dim 0 must be 2")  # fmt: skip
    fails(["benchmark", static, "--batch", "3"], capsys, "batch 3", "dynamic batch")


def test_inputs_the_library_cannot_take(dyn_dir, tmp_path, capsys):
    library = dyn_dir / "dyn.so"
    np.savez(tmp_path / "hw.npz", data=np.zeros((2, 3, 16, 16), "float32"))
    fails(["run", library, "--inputs", tmp_path / "hw.npz"], capsys,
           "[2, 3, 16, 16]", "[batch, 3, 32, 32]", "dim 2 must be 32, got 16")  # fmt: skip
    np.savez(tmp_path / "rank.npz", data=np.zeros((3, 32, 32), "float32"))
    fails(["run", library, "--inputs", tmp_path / "rank.npz"], capsys, "rank 3", "rank 4")
    np.savez(tmp_path / "empty.npz", data=np.zeros((0, 3, 32, 32), "float32"))
    fails(["run", library, "--inputs", tmp_path / "empty.npz"], capsys, "batch", ">= 1")
    fails(["benchmark", library, "--batch", "0"], capsys, "batch must be >= 1")


def test_benchmark_library_at_several_batches(dyn_dir, capsys):
    argv = ["benchmark", str(dyn_dir / "dyn.so"), "--batch", "1", "2"]
    assert main(argv + ["--rounds", "1", "--block", "2"]) == 0
    printed = capsys.readouterr().out
    assert "one library, any batch, takes data:[batch, 3, 32, 32]" in printed
    rows = table_rows(printed)
    assert set(rows) == {("tvm-onednn", 1), ("tvm-onednn", 2)}
    for row in rows.values():
        median, items, first = float(row[2]), float(row[3]), float(row[4])
        assert median > 0 and first > 0
        assert items == pytest.approx(int(row[1]) / median * 1e3, rel=0.01)
        assert float(row[5]) > 0  # the runtime built plans for each new shape
    assert "oneDNN plans cached after the run:" in printed


def test_benchmark_onnx_compiles_once(dyn_dir, capsys):
    argv = ["benchmark", str(dyn_dir / "dyn.onnx"), "--batch", "1", "3", "--compare"]
    assert main(argv + ["onnxruntime", "--rounds", "1", "--block", "1"]) == 0
    printed = capsys.readouterr().out
    assert "one library, any batch" in printed
    systems = ("tvm-onednn", "onnxruntime")
    assert set(table_rows(printed)) == {(s, b) for s in systems for b in (1, 3)}
    diffs = [float(line.split("= ")[1]) for line in printed.splitlines() if "max |" in line]
    assert len(diffs) == 2 and max(diffs) < 1e-3


def test_inspect_without_input_shapes(dyn_dir, capsys):
    assert main(["inspect", str(dyn_dir / "dyn.onnx"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"] == [{"name": "data", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]
    assert data["offload"]["offloaded_ops"]["relax.nn.conv2d"] == 6


def test_int8_calibration_of_any_batch(dyn_dir, tmp_path, capsys):
    """5 calibration samples (not a multiple of anything) for a free-batch model; the int8
    library then runs batch 3."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", data=rng.standard_normal((5, 3, 32, 32)).astype("float32"))
    out = tmp_path / "int8.so"
    argv = ["compile", str(dyn_dir / "dyn.onnx"), "-o", str(out), "--quantize", "int8"]
    assert main(argv + ["--calib-data", str(tmp_path / "calib.npz")]) == 0
    printed = capsys.readouterr().out
    assert "compiled int8 model" in printed and "(batch: any size)" in printed
    assert "onednn.qconv2d" in printed
    x = rng.standard_normal((3, 3, 32, 32)).astype("float32")
    actual = _run(out, x, tmp_path, "int8_in")
    expected = _onnxruntime(dyn_dir / "dyn.onnx", x)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=0.1 * scale)  # int8 vs fp32


def test_int8_calibration_samples_fewer_than_the_static_batch(dyn_dir, tmp_path, capsys):
    """A library fixed at batch 4 calibrates on 3 samples (the quantizer fills the batch)."""
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", data=rng.standard_normal((3, 3, 32, 32)).astype("float32"))
    out = tmp_path / "int8_b4.so"
    argv = ["compile", str(dyn_dir / "dyn.onnx"), "-o", str(out), "--quantize", "int8"]
    argv += ["--calib-data", str(tmp_path / "calib.npz"), "--input-shapes", "data:4,3,32,32"]
    assert main(argv) == 0
    assert "onednn.qconv2d" in capsys.readouterr().out
    x = rng.standard_normal((4, 3, 32, 32)).astype("float32")
    actual = _run(out, x, tmp_path, "b4_in")
    expected = _onnxruntime(dyn_dir / "dyn.onnx", x)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=0.1 * scale)  # int8 vs fp32


def test_tune_needs_static_shapes(dyn_dir, tmp_path, capsys):
    argv = ["tune", dyn_dir / "dyn.onnx", "--work-dir", tmp_path / "w", "--trials", 8]
    fails(argv, capsys, "static shapes", "['batch']", "--input-shapes data:1,3,32,32")
