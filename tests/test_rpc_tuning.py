"""Tuning over TVM's RPC tracker: a real tracker and two real servers on localhost.

The tracker and servers are TVM's own ``python -m tvm.exec.rpc_tracker`` / ``rpc_server``
started as subprocesses on free 127.0.0.1 ports (each in its own process group, killed in
the fixture's teardown, also when a test fails: ``rpc_server`` runs the server in a
``popen_worker`` child, which outlives a kill of the parent's pid alone). The tuning runs are tiny (8 trials on
one log_softmax task): they check the plumbing, not the speed-up.
"""

import contextlib
import io
import socket
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

import tvm_onednn
from tvm_onednn.cli.main import main
from tvm_onednn.testing import Runner
from tvm_onednn.tuning import (
    RPCTrackerError,
    check_tracker,
    compile_model,
    count_records,
    tuned_kernels,
)
from tvm_onednn.tuning.local_rpc import local_tracker

from .test_tuning import matmul_log_softmax_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("xgboost")
pytest.importorskip("tornado")  # the tracker

KEY = "onednn-test"
START_TIMEOUT_S = 180  # importing TVM in three processes on a loaded 2-core machine


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """``127.0.0.1:P`` of a tracker with two servers under KEY."""
    logs = tmp_path_factory.mktemp("rpc_logs")
    with local_tracker(KEY, servers=2, timeout=START_TIMEOUT_S, log_dir=logs) as address:
        yield address


@pytest.fixture(scope="module")
def rpc_tuned(tracker, tmp_path_factory):
    """8 trials over RPC (library) into A, then 8 more (command line, over RPC) on A."""
    root = tmp_path_factory.mktemp("rpc_tuning")
    model = matmul_log_softmax_onnx()
    onnx.save(model, root / "model.onnx")
    mod = tvm_onednn.from_onnx(model)
    start = time.perf_counter()
    first = tvm_onednn.tune(
        mod, work_dir=root / "a", max_trials=8, seed=1, rpc_tracker=tracker, rpc_key=KEY
    )
    first_seconds = time.perf_counter() - start
    first_count = count_records(root / "a")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["tune", str(root / "model.onnx"), "--work-dir", str(root / "a"), "--trials", "8"]
        argv += ["--seed", "2", "--rpc-tracker", tracker, "--rpc-key", KEY, "--rpc-timeout", "60"]
        assert main(argv) == 0
    print(f"rpc tuning: 8 trials in {first_seconds:.0f} s")
    return model, mod, root, first, first_count, out.getvalue()


def test_tuning_over_rpc_writes_records(rpc_tuned, tracker):
    _, _, _, first, first_count, _ = rpc_tuned
    assert [t.name for t in first.tasks] == ["log_softmax"]
    assert first.trials == 8 and first.tasks[0].errors == 0, str(first)
    assert first.records_before == 0 and first.records_after == first_count >= 8
    assert f"RPC tracker {tracker}" in first.measured_on and "2 server(s)" in first.measured_on
    assert np.isfinite(first.tasks[0].best_us)


def test_second_rpc_run_keeps_records(rpc_tuned, tracker):
    _, _, root, _, first_count, second = rpc_tuned
    assert f"RPC tracker {tracker}" in second
    assert f"{first_count} before, {count_records(root / 'a')} now" in second
    assert count_records(root / "a") > first_count


def test_rpc_tuned_build_matches_onnxruntime(rpc_tuned):
    model, mod, root, _, _, _ = rpc_tuned
    assert tuned_kernels(mod, None, [root / "a"]) == (["log_softmax"], [])
    x = np.random.default_rng(0).standard_normal((1, 32, 64)).astype("float32")
    expected = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"data": x})[0]
    actual = Runner(compile_model(mod, tuning_records=[root / "a"]))(x)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def _silent_port() -> int:
    """A localhost port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracker_that_does_not_answer_fails_fast(tmp_path):
    address = f"127.0.0.1:{_silent_port()}"
    mod = tvm_onednn.from_onnx(matmul_log_softmax_onnx())
    start = time.perf_counter()
    with pytest.raises(RPCTrackerError, match="does not answer") as err:
        tvm_onednn.tune(mod, work_dir=tmp_path / "w", max_trials=8, rpc_tracker=address,
                        rpc_key=KEY)  # fmt: skip
    assert time.perf_counter() - start < 30
    assert address in str(err.value)
    assert not (tmp_path / "w").exists()  # nothing started


def test_key_without_servers_fails_fast(tracker, tmp_path):
    mod = tvm_onednn.from_onnx(matmul_log_softmax_onnx())
    start = time.perf_counter()
    with pytest.raises(RPCTrackerError, match="no server under key 'nobody'") as err:
        tvm_onednn.tune(mod, work_dir=tmp_path / "w", max_trials=8, rpc_tracker=tracker,
                        rpc_key="nobody")  # fmt: skip
    assert time.perf_counter() - start < 30
    assert tracker in str(err.value) and KEY in str(err.value)  # names the keys it has


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", "127.0.0.1:port", ":9190",
                                     "127.0.0.1:70000"])  # fmt: skip
def test_bad_address_is_a_value_error(address):
    with pytest.raises(ValueError, match="bad RPC tracker address"):
        check_tracker(address, KEY)


def _cli_fails(argv, capsys, *needles):
    start = time.perf_counter()
    assert main([str(a) for a in argv]) == 2
    assert time.perf_counter() - start < 30
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in err and "Traceback" not in captured.out
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tvm-onednn tune: error:"), err
    for needle in needles:
        assert needle in err, err


def test_cli_rpc_errors(tracker, tmp_path, capsys):
    model = tmp_path / "model.onnx"
    onnx.save(matmul_log_softmax_onnx(), model)
    base = ["tune", model, "--work-dir", tmp_path / "w", "--trials", 8]
    down = f"127.0.0.1:{_silent_port()}"
    _cli_fails(base + ["--rpc-tracker", down, "--rpc-key", KEY], capsys, down, "does not answer")
    _cli_fails(base + ["--rpc-tracker", tracker, "--rpc-key", "nobody"], capsys, tracker,
               "'nobody'")  # fmt: skip
    _cli_fails(base + ["--rpc-tracker", "nowhere", "--rpc-key", KEY], capsys, "'nowhere'")
    _cli_fails(base + ["--rpc-tracker", tracker], capsys, "--rpc-key")
    _cli_fails(base + ["--rpc-key", KEY], capsys, "--rpc-tracker")
    _cli_fails(base + ["--rpc-tracker", tracker, "--rpc-key", KEY, "--rpc-timeout", 0], capsys,
               "--rpc-timeout")  # fmt: skip
    assert not (tmp_path / "w").exists()


def test_cli_tracker_down_in_a_fresh_process(tmp_path):
    model = tmp_path / "model.onnx"
    onnx.save(matmul_log_softmax_onnx(), model)
    down = f"127.0.0.1:{_silent_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "tvm_onednn", "tune", str(model), "--work-dir",
         str(tmp_path / "w"), "--trials", "8", "--rpc-tracker", down, "--rpc-key", KEY],
        capture_output=True, check=False, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tvm-onednn tune: error: RPC tracker " + down), line
