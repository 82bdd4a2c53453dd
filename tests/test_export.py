"""Compiled modules: export/load in a fresh process, concurrent use, bad input."""

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import tvm

import tvm_onednn
from tvm_onednn.models.resnet import small_resnet_onnx
from tvm_onednn.testing import Runner, build


@pytest.fixture(scope="module")
def compiled():
    mod = tvm_onednn.from_onnx(small_resnet_onnx(batch=2))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype("float32")
    return build(mod), x


def test_export_load_in_fresh_process(compiled, tmp_path):
    executable, x = compiled
    expected = Runner(executable)(x)
    library = tmp_path / "model.so"
    executable.export_library(str(library))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np, tvm
        import tvm_onednn  # registers the oneDNN module loader
        lib = tvm.runtime.load_module({str(library)!r})
        vm = tvm.relax.VirtualMachine(lib, tvm.cpu())
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, vm["main"](tvm.runtime.tensor(x)).numpy())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_loading_without_plugin_names_the_missing_loader(compiled, tmp_path):
    executable, _ = compiled
    library = tmp_path / "model.so"
    executable.export_library(str(library))
    script = f"import tvm; tvm.runtime.load_module({str(library)!r})"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "onednn_json" in result.stderr


def test_concurrent_calls_from_threads(compiled):
    """One VM per thread (a TVM VM is not thread-safe), all sharing the oneDNN modules."""
    executable, x = compiled
    expected = Runner(executable)(x)
    inputs = [x * (i + 1) for i in range(4)]
    references = [Runner(executable)(xi) for xi in inputs]
    runners = [Runner(executable) for _ in inputs]
    results: dict[int, list] = {}
    errors = []

    def work(i):
        try:
            results[i] = [runners[i](inputs[i]) for _ in range(10)]
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i, outs in results.items():
        for out in outs:
            np.testing.assert_array_equal(out, references[i])
    assert len(results) == len(inputs)
    np.testing.assert_array_equal(runners[0](x), expected)


@pytest.mark.parametrize(
    "bad_input, message",
    [
        (np.zeros((2, 3, 16, 16), "float32"), "shape"),
        (np.zeros((2, 3, 32, 32), "float64"), "float"),
    ],
)
def test_wrong_input_gives_clear_error(compiled, bad_input, message):
    executable, _ = compiled
    with pytest.raises(Exception, match=message):
        Runner(executable)(bad_input)


def _region_module():
    mod = tvm_onednn.partition_for_onednn(tvm_onednn.from_onnx(small_resnet_onnx()))
    mod = tvm.relax.transform.RunCodegen()(mod)
    return mod.attrs["external_mods"][0]


def test_corrupt_serialized_module_is_rejected():
    loader = tvm.get_global_func("ffi.Module.load_from_bytes.onednn_json")
    with pytest.raises(Exception, match="onednn"):
        loader(b"definitely not a oneDNN module")


def test_unsupported_attribute_is_rejected_by_runtime():
    module = _region_module()
    graph = json.loads(module["get_json"]())
    graph["nodes"][0]["attrs"]["groups"] = 5  # does not divide the channels
    with pytest.raises(Exception, match="groups"):
        tvm_onednn._ffi_api.create_module(json.dumps(graph))
