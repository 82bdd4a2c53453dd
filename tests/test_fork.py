"""Child processes of a process that ran a oneDNN model: forked (servers, multiprocessing's
default on Linux) and spawned children both compute the right output.

GNU OpenMP cannot start threads in a child forked after the parent used them; the runtime
runs a forked child's oneDNN calls on one thread and rebuilds its primitives there (before,
the child's first call waited forever in an OpenMP barrier). Each child has a time limit so
that a hang fails the test instead of the CI run.
"""

import json
import multiprocessing
import os
import signal

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_onednn
from tvm_onednn.models.resnet import small_resnet_onnx
from tvm_onednn.testing import Runner, build

CHILD_SECONDS = 120


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    mod = tvm_onednn.from_onnx(small_resnet_onnx())
    executable = build(mod)
    path = tmp_path_factory.mktemp("fork") / "model.so"
    executable.export_library(str(path))
    shape = [int(d) for d in mod["main"].params[0].ty.shape.values]
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    runner = Runner(executable)
    return runner, x, runner(x), str(path)


def _forked(run, deliver) -> int:
    """Run ``run`` in a forked child with a time limit; ``deliver(result)`` writes its answer."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            signal.alarm(CHILD_SECONDS)
            with os.fdopen(write_end, "wb") as out:
                out.write(deliver(run()))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        data = answer.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
    return data


def test_forked_child_runs_the_model(model):
    runner, x, expected, _ = model
    threads_before = tvm_onednn.get_num_threads()
    data = _forked(lambda: runner(x), lambda out: np.ascontiguousarray(out).tobytes())
    actual = np.frombuffer(data, dtype=expected.dtype).reshape(expected.shape)
    np.testing.assert_array_equal(actual, expected)
    # The parent keeps its threads and still runs.
    assert tvm_onednn.get_num_threads() == threads_before
    np.testing.assert_array_equal(runner(x), expected)


def test_forked_child_runs_on_one_thread_and_can_fork_again(model):
    runner, x, expected, _ = model

    def grandchild_in_child():
        first = runner(x)
        inner = _forked(lambda: runner(x), lambda out: np.ascontiguousarray(out).tobytes())
        return first, inner, tvm_onednn.get_num_threads()

    def deliver(result):
        first, inner, threads = result
        ok = np.array_equal(first, expected) and inner == np.ascontiguousarray(expected).tobytes()
        return f"{ok} {threads}".encode()

    assert _forked(grandchild_in_child, deliver) == b"True 1"


def _run_exported(path: str, x: np.ndarray) -> np.ndarray:
    import tvm_onednn  # noqa: F401  (registers the module loader in the spawned process)

    vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_spawned_child_runs_the_exported_model(model):
    _, x, expected, path = model
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        actual = pool.apply_async(_run_exported, (path, x)).get(timeout=CHILD_SECONDS)
    np.testing.assert_array_equal(actual, expected)


def _dynamic_conv_module():
    """A region with a symbolic batch: conv2d_relu [n, 4, 8, 8] -> [n, 8, 8, 8]."""
    w = np.random.default_rng(1).standard_normal((8, 4, 3, 3)).astype("float32")
    attrs = dict(strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)
    doc = {"format": "tvm_onednn.subgraph", "version": 2, "symbol": "onednn_0",
           "inputs": [{"shape": ["n", 4, 8, 8], "dtype": "float32"}],
           "constants": [{"name": "w", "shape": [8, 4, 3, 3], "dtype": "float32"}],
           "nodes": [{"op": "onednn.conv2d_relu", "inputs": [["input", 0], ["const", 0]],
                      "attrs": attrs, "shape": ["n", 8, 8, 8], "dtype": "float32"}],
           "outputs": [["node", 0]]}
    mod = tvm_onednn._ffi_api.create_module(json.dumps(doc))
    assert mod["__init_onednn_0"]([tvm.runtime.tensor(w)]) == 0

    def run(batch):
        x = np.random.default_rng(batch).standard_normal((batch, 4, 8, 8)).astype("float32")
        out = tvm.runtime.tensor(np.full((batch, 8, 8, 8), np.nan, "float32"))
        mod["onednn_0"](tvm.runtime.tensor(x), out)
        return out.numpy()

    return mod, run


def test_forked_child_rebuilds_dynamic_plans():
    """The parent ran batch 2; the child drops the parent's plans and runs batches 3 and 2."""
    mod, run = _dynamic_conv_module()
    expected = {b: run(b) for b in (3, 2)}  # the parent's answers (batch 2 is the last plan)
    before = json.loads(mod["get_stats"]())
    assert before["plans_cached"] == 2

    def in_child():
        outs = [run(3), run(2)]
        return outs, json.loads(mod["get_stats"]())

    def deliver(result):
        outs, st = result
        ok = all(np.array_equal(o, expected[b]) for o, b in zip(outs, (3, 2)))
        return f"{ok} {st['plans_cached']} {st['plans_built']} {st['weight_packs']}".encode()

    # The child rebuilds both plans (built: 2 in the parent + 2) and reuses the packed weights.
    assert _forked(in_child, deliver) == f"True 2 4 {before['weight_packs']}".encode()
    np.testing.assert_array_equal(run(2), expected[2])
    assert json.loads(mod["get_stats"]())["plans_built"] == 2  # the parent's plans are intact
