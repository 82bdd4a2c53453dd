"""``benchmarks/bench_transformer.py`` (issue 12), smoke size: one round at batch 1, sequence
16, tvm-onednn (static and compiled-once dynamic) and onnxruntime only.

Checks the structure of the JSON and the table, and that tvm-onednn's sentence embeddings
match onnxruntime's (the reference), not speed. Helpers are checked against numpy.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
from tvm_onednn.models.minilm import minilm_missing  # noqa: E402

if minilm_missing():
    pytest.skip(minilm_missing(), allow_module_level=True)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SYSTEMS = ("tvm-onednn", "tvm-onednn-dyn", "onnxruntime")
#: fp32 vs fp32 (other summation orders): sentence embeddings are unit vectors.
MAX_ABS_DIFF, MIN_COSINE = 1e-4, 0.9999


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports harness, cli, systems
    try:
        spec = importlib.util.spec_from_file_location("bench_transformer", BENCHMARKS /
                                                      "bench_transformer.py")  # fmt: skip
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "transformer.json"
    argv = ["--batches", "1", "--seqs", "16", "--systems", ",".join(SYSTEMS), "--rounds", "1",
            "--warmup", "1", "--block-seconds", "0.01", "--max-iters", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    return json.loads(out.read_text())


def test_results_structure(run):
    assert run["meta"]["machine"]["onednn_isa"]
    assert run["meta"]["machine"]["threads"] >= 1
    rows = {row["system"]: row for row in run["results"]}
    assert set(rows) == set(SYSTEMS)
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["error"])
        assert (row["model"], row["batch"], row["precision"]) == ("minilm-s16", 1, "fp32")
        assert row["median_ms"] > 0 and len(row["samples_ms"]) == 1
        assert row["peer"] == (name == "onnxruntime")
        assert row["vs_best_peer"] > 0 and row["best_peer_same_precision"] == "onnxruntime"
    for name in ("tvm-onednn", "tvm-onednn-dyn"):
        offload = rows[name]["settings"]["offload"]
        assert offload["regions"] >= 1 and sum(offload["offloaded_ops"].values()) > 0
        assert "relax.matmul" not in offload["kept_ops"]
    assert rows["tvm-onednn-dyn"]["settings"]["dynamic"] is True


def test_embeddings_match_onnxruntime(run):
    rows = {row["system"]: row for row in run["results"]}
    for name in ("tvm-onednn", "tvm-onednn-dyn"):
        row = rows[name]
        assert row["reference"] == "onnxruntime"
        assert row["max_abs_diff"] <= MAX_ABS_DIFF, row["max_abs_diff"]
        acc = row["accuracy"]
        assert acc["cosine_vs"] == "onnxruntime"
        assert acc["cosine_min"] >= MIN_COSINE, acc
        assert acc["rank_agreement"] == 1.0, acc
    assert rows["onnxruntime"]["accuracy"]["rank_agreement"] == 1.0


def test_ranking_agreement_against_numpy(bench):
    ref = np.array([0.9, 0.5, 0.1, 0.3])
    assert bench.ranking_agreement(ref * 2, ref) == 1.0
    assert bench.ranking_agreement(-ref, ref) == 0.0
    # Swapping the two lowest changes the order of 1 of the 6 pairs-of-pairs.
    assert bench.ranking_agreement(np.array([0.9, 0.5, 0.3, 0.1]), ref) == pytest.approx(5 / 6)


def test_sentence_sets(bench):
    assert not set(bench.EVAL_SENTENCES) & set(bench.CALIB_SENTENCES)
    assert len(bench.EVAL_SENTENCES) + len(bench.CALIB_SENTENCES) >= 40
    assert all(max(pair) < len(bench.EVAL_SENTENCES) for pair in bench.PAIRS)
    feeds = bench.packed_feeds(bench.EVAL_SENTENCES, 2, 32)
    assert feeds["input_ids"].shape == (2, 32) and feeds["attention_mask"].all()
    chunks = bench.sentence_chunks(5, 32)  # 24 sentences: the last chunk filled up
    assert len(chunks) == 5 and all(c["input_ids"].shape == (5, 32) for c in chunks)


def test_unknown_system_is_an_error(bench):
    args = bench.parse_args(["--systems", "tvm-onednn,nope"])
    with pytest.raises(ValueError, match="unknown system\\(s\\) \\['nope'\\]"):
        bench.make_systems(["tvm-onednn", "nope"], args, "x86-64")


@pytest.mark.parametrize("option, match", [
    (["--seqs", "1"], "2 <= seq <= 512, got batch 1 seq 1"),
    (["--batches", "0", "--seqs", "16"], "got batch 0 seq 16"),
    (["--seqs", "16", "--tune-tasks", "0"], "--tune-tasks and --calib-batches must be >= 1"),
])  # fmt: skip
def test_bad_options_are_errors(bench, option, match):
    with pytest.raises(ValueError, match=match):
        bench.main(["--batches", "1", "--systems", "onnxruntime", *option])
