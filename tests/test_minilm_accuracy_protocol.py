"""The MiniLM int8 accuracy protocol of ``benchmarks/minilm_accuracy.py`` (issue 13 item 4), small.

all-MiniLM-L6-v2 (real weights) at sequence 32, calibrated on 4 rows of other sentences: the
held-out sentences are disjoint from the calibration rows, the result has the benchmark's JSON
structure, a missing peer is skipped with a note, and tvm-onednn's int8 sentence embeddings
keep a cosine >= 0.99 with float32 (the reference: tvm-onednn float32, itself checked against
onnxruntime float32). Scores are checked against numpy / scipy.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tvm_onednn.models.minilm import minilm_missing

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SEQ, N_CALIB = 32, 4
#: int8 vs float32 sentence embeddings (issue 13's bar). Measured on the AMX machine at seq 32:
#: dynamic int8 mean 0.9936 / min 0.9886; static int8 entropy 0.846 / 0.783, naive 0.978 / 0.969.
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def protocol():
    if minilm_missing():
        pytest.skip(minilm_missing())
    added = str(BENCHMARKS) not in sys.path
    try:
        spec = importlib.util.spec_from_file_location("minilm_accuracy",
                                                      BENCHMARKS / "minilm_accuracy.py")  # fmt: skip
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # it puts benchmarks/ on sys.path for bench_transformer
        yield module
    finally:
        if added and str(BENCHMARKS) in sys.path:
            sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def result(protocol):
    pytest.importorskip("onnxruntime")
    systems = ("tvm-onednn:entropy", "tvm-onednn:none", "nncf:transformer")
    original = protocol._peer_missing
    protocol._peer_missing = lambda s: "skipped: not installed" if s.startswith("nncf") else None
    try:
        out = protocol.minilm_protocol((N_CALIB,), systems, seq=SEQ)
    finally:
        protocol._peer_missing = original
    return out


def test_held_out_sentences_are_disjoint_from_calibration(protocol):
    bt = protocol.bt
    held_out = bt.sentence_chunks(1, SEQ)
    protocol.assert_disjoint(bt.calibration_feeds(1, SEQ, 16), held_out)
    leaked = bt.tokenize([f"{bt.CALIB_SENTENCES[0]} {bt.EVAL_SENTENCES[5]}"], SEQ)
    with pytest.raises(AssertionError, match="1 held-out sentence\\(s\\) in the calibration"):
        protocol.assert_disjoint([*bt.calibration_feeds(1, SEQ, 2), leaked], held_out)


def test_scores_against_numpy_and_scipy(protocol):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(24, 8))
    emb = ref + 0.3 * rng.normal(size=ref.shape)
    s = protocol.scores(emb, ref)
    cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(emb, ref)]
    assert s["cosine_mean"] == pytest.approx(np.mean(cos)) and s["cosine_min"] == min(cos)
    sims, ref_sims = (protocol.bt.pair_similarities(e) for e in (emb, ref))
    assert s["spearman"] == pytest.approx(stats.spearmanr(sims, ref_sims).statistic)
    assert protocol.spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(
        stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic)  # fmt: skip
    assert protocol.scores(ref, ref)["pair_order_agreement"] == 1.0
    assert s["similarity_error_mean"] == pytest.approx(np.abs(sims - ref_sims).mean())
    assert protocol.scores(ref, ref)["flipped_gap_max"] == 0.0


def test_flipped_gaps_name_the_pairs_whose_order_changed(protocol):
    ref = np.array([0.10, 0.50, 0.52, 0.90])
    sims = np.array([0.10, 0.53, 0.51, 0.60])  # swaps (1, 2): gap 0.02; (3 vs 1, 2) kept
    np.testing.assert_allclose(protocol.flipped_gaps(sims, ref), [0.02])
    sims = np.array([0.55, 0.53, 0.51, 0.60])  # also 0 above 1 and 2: gaps 0.40, 0.42
    np.testing.assert_allclose(protocol.flipped_gaps(sims, ref), [0.02, 0.40, 0.42])
    np.testing.assert_allclose(protocol.pair_gaps(ref), [0.40, 0.42, 0.80, 0.02, 0.40, 0.38])


def test_bad_arguments_are_value_errors(protocol):
    with pytest.raises(ValueError, match="unknown MiniLM systems \\['ort:minmax'\\]"):
        protocol.minilm_protocol((4,), ("tvm-onednn:naive", "ort:minmax"))
    with pytest.raises(ValueError, match="got N \\[0, 17\\] and seq 32"):
        protocol.minilm_protocol((0, 4, 17), seq=32)
    with pytest.raises(ValueError, match="got N \\[\\] and seq 1"):
        protocol.minilm_protocol((4,), seq=1)


def test_results_structure(result):
    json.dumps(result)  # the benchmark writes it as JSON
    assert (result["seq"], result["n_eval"], result["n_pairs"]) == (SEQ, 24, 20)
    assert result["fp32_check"]["onnxruntime_fp32_cosine_min"] >= 0.9999  # fp32 vs fp32
    runs = {run["n_calib"]: run["results"] for run in result["runs"]}
    assert set(runs) == {0, N_CALIB}
    assert set(runs[0]) == {"tvm-onednn:none"}
    assert set(runs[N_CALIB]) == {"tvm-onednn:entropy", "nncf:transformer"}
    assert runs[N_CALIB]["nncf:transformer"] == {"note": "skipped: not installed"}
    for r in (runs[0]["tvm-onednn:none"], runs[N_CALIB]["tvm-onednn:entropy"]):
        assert -1.0 <= r["cosine_min"] <= r["cosine_mean"] <= 1.0 + 1e-9
        assert 0.0 <= r["pair_order_agreement"] <= 1.0 and -1.0 <= r["spearman"] <= 1.0
        assert r["similarity_error_mean"] >= 0.0 and r["flipped_gap_max"] >= 0.0
        assert (r["flipped_gap_max"] == 0.0) == (r["pair_order_agreement"] == 1.0)
    gaps = result["float32_closest_pair_gaps"]
    assert len(gaps) == 3 and gaps == sorted(gaps) and gaps[0] >= 0.0


def test_reference_precisions(result):
    """float16 keeps the embeddings and the ranking; bfloat16 (8 significant bits) keeps the
    embeddings (measured at seq 64 / 128: cosine min 0.9999, pair order 0.995, one swap)."""
    refs = result["references"]
    assert set(refs) == {"bfloat16", "float16"}
    assert refs["float16"]["cosine_min"] >= 0.9999 and refs["float16"]["spearman"] >= 0.99
    assert refs["bfloat16"]["cosine_min"] >= 0.999, refs
    assert refs["bfloat16"]["cosine_min"] < 1.0 - 1e-6, "bfloat16 did not round anything"


def test_dynamic_int8_embeddings_keep_cosine(result):
    r = next(run for run in result["runs"] if run["n_calib"] == 0)["results"]["tvm-onednn:none"]
    print(f"tvm-onednn:none cosine mean {r['cosine_mean']:.5f} min {r['cosine_min']:.5f}")
    assert r["cosine_mean"] >= MIN_COSINE, r


@pytest.mark.xfail(strict=True, reason="static int8 (calibrated scales) loses the embedding: "
                   "cosine mean 0.84 with entropy, 0.98 with naive (issue 13 item 4)")  # fmt: skip
def test_static_int8_embeddings_keep_cosine(result):
    run = next(run for run in result["runs"] if run["n_calib"] == N_CALIB)
    r = run["results"]["tvm-onednn:entropy"]
    print(f"tvm-onednn:entropy cosine mean {r['cosine_mean']:.5f} min {r['cosine_min']:.5f}")
    assert r["cosine_mean"] >= MIN_COSINE, r
