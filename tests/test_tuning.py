"""MetaSchedule tuning of what stays with TVM: tasks, records, resuming, merging, applying.

The tuning runs are tiny (8 trials on one log_softmax task) to keep CI time modest; they check
the plumbing (records written, kept, merged and applied), not the speed-up.
"""

import contextlib
import io
import math
import shutil

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.s_tir import meta_schedule as ms

import tvm_onednn
from tvm_onednn.cli.main import main
from tvm_onednn.models.graph_builder import GraphBuilder
from tvm_onednn.models.resnet import small_resnet_onnx
from tvm_onednn.testing import Runner
from tvm_onednn.tuning import (
    TuningRecordsError,
    compile_model,
    count_records,
    extract_tasks,
    merge_databases,
    tune,
    tuned_kernels,
    tuning_target,
)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("xgboost")


def matmul_log_softmax_onnx(seq: int = 32, hidden: int = 64):
    """data [1, seq, hidden] -> MatMul + Add (oneDNN) -> LogSoftmax (TVM's kernel, tuned)."""
    g = GraphBuilder(0)
    w = g.const("w", g.rng.standard_normal((hidden, hidden)).astype("float32") * 0.1)
    b = g.const("b", g.rng.standard_normal(hidden).astype("float32") * 0.1)
    y = g.op("Add", [g.op("MatMul", ["data", w], "matmul"), b], "bias")
    out = g.op("LogSoftmax", [y], "output", axis=-1)
    shape = [1, seq, hidden]
    return g.model([("data", shape)], [(out, shape)], "matmul_log_softmax")


def test_offloaded_convs_are_not_tuning_tasks():
    mod = tvm_onednn.from_onnx(small_resnet_onnx())
    names = [t.task_name for t in extract_tasks(mod)]
    assert not any("conv" in n or "matmul" in n or "pool" in n for n in names), names
    # Without the offload, the same model's convs are MetaSchedule tasks.
    target = tuning_target(None)
    with target:
        legal = tvm.transform.Sequential(cpu.legalize_passes(target))(mod)
    plain = [t.task_name for t in ms.relax_integration.extract_tasks(legal, target)]
    assert any("conv2d" in n for n in plain), plain


def test_nothing_to_tune_reports_no_tasks(tmp_path):
    """A model with no TVM kernels left is not an error: the report says so."""
    g = GraphBuilder(0)
    w = g.const("w", np.ones((16, 8), "float32"))
    y = g.op("Relu", [g.op("MatMul", ["data", w], "mm")], "y")
    mod = tvm_onednn.from_onnx(g.model([("data", [4, 16])], [(y, [4, 8])], "mlp"))
    report = tune(mod, work_dir=tmp_path / "w", max_trials=8)
    assert report.tasks == [] and report.trials == 0
    # the (empty) records still build, as the command line's --tuning-records would
    assert tvm_onednn.compile_model(mod, tuning_records=[tmp_path / "w"]) is not None
    assert "nothing to tune" in str(report)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny tuning run (library) into A, a copy of A as B, a second run (command line) on A."""
    root = tmp_path_factory.mktemp("tuning")
    model = matmul_log_softmax_onnx()
    onnx.save(model, root / "model.onnx")
    mod = tvm_onednn.from_onnx(model)
    first = tune(mod, work_dir=root / "a", max_trials=8, seed=1)
    shutil.copytree(root / "a", root / "b")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["tune", str(root / "model.onnx"), "--work-dir", str(root / "a"), "--trials", "8"]
        assert main(argv + ["--seed", "2"]) == 0
    return model, mod, root, first, out.getvalue()


def test_tuning_writes_records(tuned):
    _, _, root, first, _ = tuned
    assert [t.name for t in first.tasks] == ["log_softmax"]
    assert first.records_before == 0
    assert first.trials == 8 and first.records_after == count_records(root / "b") >= 8
    assert first.tasks[0].best_us is not None and math.isfinite(first.tasks[0].best_us)
    assert "log_softmax" in str(first) and "0 before" in str(first)


def test_second_run_keeps_records(tuned):
    _, _, root, first, second = tuned
    assert "log_softmax" in second
    assert f"{first.records_after} before, {count_records(root / 'a')} now" in second
    assert count_records(root / "a") > first.records_after


def test_records_from_two_work_dirs_apply_and_match_onnxruntime(tuned):
    model, mod, root, _, _ = tuned
    work_dirs = [root / "a", root / "b"]
    tuned_names, untuned_names = tuned_kernels(mod, None, work_dirs)
    assert tuned_names == ["log_softmax"] and untuned_names == []
    x = np.random.default_rng(0).standard_normal((1, 32, 64)).astype("float32")
    expected = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"data": x})[0]
    actual = Runner(compile_model(mod, tuning_records=work_dirs))(x)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_merged_database_answers_with_the_best_record(tuned):
    _, mod, root, _, _ = tuned
    target = tuning_target(None)
    (task,) = extract_tasks(mod, target)
    workload = task.dispatched[0]

    def best(database):
        record = database.query_tuning_record(workload, target, "main")
        return float(np.mean([float(s) for s in record.run_secs]))

    a, b = merge_databases([root / "a"]), merge_databases([root / "b"])
    assert best(merge_databases([root / "a", root / "b"])) == min(best(a), best(b))


def test_untuned_kernels_are_reported(tuned, tmp_path):
    _, mod, _, _, _ = tuned
    assert tuned_kernels(mod) == ([], ["log_softmax"])
    with pytest.raises(TuningRecordsError):
        compile_model(mod, tuning_records=[tmp_path])


def test_pipeline_lowering_is_what_is_tuned():
    """lower_for_tvm + the finishing passes == relax_pipeline="onednn" (same kernels)."""
    from tvm_onednn.pipeline import lower_for_tvm

    mod = tvm_onednn.from_onnx(matmul_log_softmax_onnx())
    target = tuning_target(None)
    lowered = lower_for_tvm(mod, target)
    kernels = sorted(
        gv.name_hint for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
    )
    assert kernels == ["log_softmax"]
    assert any(
        isinstance(f, relax.Function) and "call_dps_packed" in f.script()
        for f in lowered.functions.values()
    )


def test_cli_compile_and_benchmark_with_records(tuned, tmp_path, capsys):
    _, _, root, _, _ = tuned
    model = str(root / "model.onnx")
    records = [str(root / "a"), str(root / "b")]
    out = tmp_path / "tuned.so"
    assert main(["compile", model, "-o", str(out), "--tuning-records", *records]) == 0
    assert "applied to 1 of 1 TVM kernel(s)" in capsys.readouterr().out
    argv = ["benchmark", model, "--tuning-records", records[0], "--compare", "untuned"]
    assert main(argv + ["--rounds", "1", "--block", "2"]) == 0
    printed = capsys.readouterr().out
    assert "tvm-onednn-untuned" in printed and "tuned vs untuned" in printed
