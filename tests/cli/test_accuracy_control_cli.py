"""``compile --quantize int8 --validation-data VAL.npz --max-drop D``: accuracy control from
the command line (top-1 agreement with float32 on the validation samples)."""

import numpy as np
import onnxruntime as ort

from tvm_onednn.cli.main import main

from .helpers import fails

MAX_DROP = 0.125  # one of the 8 validation samples


def test_compile_with_accuracy_control(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(5)
    val = rng.standard_normal((8, 3, 32, 32)).astype("float32")
    np.savez(tmp_path / "val.npz", data=val)
    out = tmp_path / "int8.so"
    argv = ["compile", str(model_dir / "small.onnx"), "-o", str(out), "--quantize", "int8"]
    argv += ["--calib-data", str(model_dir / "calib.npz")]
    argv += ["--validation-data", str(tmp_path / "val.npz"), "--max-drop", str(MAX_DROP)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "accuracy control: metric fp32 1.0000" in printed
    assert f"budget {MAX_DROP:g}: met" in printed
    # The library keeps onnxruntime's float32 top-1 on the validation samples within budget.
    int8 = []
    for i, x in enumerate(val):  # the library takes batch 1
        np.savez(tmp_path / f"in{i}.npz", data=x[None])
        result = tmp_path / f"out{i}.npz"
        assert main(["run", str(out), "--inputs", str(tmp_path / f"in{i}.npz"), "-o", str(result)]) == 0
        int8.append(np.load(result)["output_0"])
    int8 = np.concatenate(int8)
    sess = ort.InferenceSession(str(model_dir / "small.onnx"), providers=["CPUExecutionProvider"])
    fp32 = np.concatenate([sess.run(None, {"data": x[None]})[0] for x in val])
    assert np.mean(int8.argmax(1) == fp32.argmax(1)) >= 1 - MAX_DROP


def test_accuracy_control_option_errors(model_dir, tmp_path, capsys):
    np.savez(tmp_path / "val.npz", data=np.zeros((2, 3, 32, 32), "float32"))
    val = tmp_path / "val.npz"
    base = ["compile", model_dir / "small.onnx", "-o", tmp_path / "m.so"]
    fails(base + ["--validation-data", val], capsys, "need --quantize int8")
    fails(base + ["--max-drop", "0.01"], capsys, "need --quantize int8")
    base += ["--quantize", "int8", "--calib-data", model_dir / "calib.npz"]
    fails(base + ["--max-drop", "0.01"], capsys, "--max-drop needs --validation-data")
    fails(base + ["--validation-data", val, "--max-drop", "-1"], capsys, "--max-drop must be")
    fails(base + ["--validation-data", tmp_path / "nowhere.npz"], capsys, "nowhere")
