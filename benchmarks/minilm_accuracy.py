"""all-MiniLM-L6-v2 int8 accuracy on held-out sentences (issue 13, item 4).

Protocol. The model (``tvm_onednn.models.minilm``, real weights, batch 1, every sentence padded
to ``seq`` tokens with its attention mask) is quantized by every system from the same float32
ONNX model and scored on the same held-out sentences in the same run:

* held-out set: ``bench_transformer.EVAL_SENTENCES``, each on its own padded row;
* calibration set of size ``N``: ``bench_transformer.calibration_feeds(1, seq, N)``, ``N``
  rows of running text from ``CALIB_SENTENCES`` (row ``k`` starts at sentence ``k``). No
  held-out sentence's tokens occur in a calibration row (:func:`assert_disjoint`, asserted).

Systems (the ``bench_transformer`` system classes, so both benchmarks quantize alike):

* ``tvm-onednn:<calib_mode>``: ``tvm_onednn.quantize`` static int8 (``entropy``, the default,
  and ``naive``), calibrated on the ``N`` rows;
* ``tvm-onednn:none``: dynamic int8 (``calib_mode="none"``, scales computed per call);
* ``ort:dynamic``: onnxruntime ``quantize_dynamic`` (s8 weights, u8 activations per call), its
  usual transformer int8; ``ort:bert-dynamic``: the same after its BERT graph optimizer;
* reference precisions (no int8): the same float32 model run entirely in ``bfloat16`` and
  in ``float16`` (``minilm_torch``, torch's CPU kernels), how close any 8-bit-significand
  format gets (``references``);
* ``nncf:transformer``: OpenVINO ``nncf.quantize(..., model_type=ModelType.TRANSFORMER)`` on
  the ``N`` rows.

Calibration-free systems run once (``n_calib`` 0 in the results). A missing peer is skipped
with a note. Scores, against the float32 model built by tvm-onednn (checked against
onnxruntime float32, ``fp32_check``):

* ``cosine_mean`` / ``cosine_min``: cosine of each held-out sentence's int8 embedding with its
  float32 embedding;
* ``pair_order_agreement``: over the ``PAIRS`` sentence pairs, the fraction of pairs of pairs
  whose similarities the int8 model orders as float32 does (``ranking_agreement``; 1.0: the
  same ranking), and ``spearman``: Spearman's rank correlation of the pair similarities;
  ``similarity_error_mean`` (mean |similarity - float32's|) and ``flipped_gap_max`` (the
  largest float32 gap between two pairs' similarities that the system orders otherwise),
  beside ``float32_closest_pair_gaps``: a ranking survives only errors below its closest gaps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_accuracy.py --models minilm
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # bench_transformer imports its siblings (harness, cli, systems)

import bench_transformer as bt  # noqa: E402
from harness import Workload  # noqa: E402

SEQ = 64
N_CALIB = (4, 16)
TVM_MODES = ("entropy", "naive")
#: Systems that need no calibration data: they run once per protocol (``n_calib`` 0).
CALIBRATION_FREE = ("tvm-onednn:none", "ort:dynamic", "ort:bert-dynamic")
SYSTEMS = (*(f"tvm-onednn:{m}" for m in TVM_MODES), *CALIBRATION_FREE, "nncf:transformer")
PEERS = ("ort:dynamic", "ort:bert-dynamic", "nncf:transformer")
#: The reference precisions: the float32 model run entirely in these torch dtypes.
REFERENCE_DTYPES = ("bfloat16", "float16")


# --- data -----------------------------------------------------------------------------------


def _sentence_tokens(feeds: bt.Feeds) -> list[tuple[int, ...]]:
    """Per row, the unmasked token ids without ``[CLS]`` and the final ``[SEP]``."""
    return [tuple(ids[mask == 1][1:-1].tolist())
            for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"])]  # fmt: skip


def _contains(row: tuple[int, ...], part: tuple[int, ...]) -> bool:
    return any(row[i : i + len(part)] == part for i in range(len(row) - len(part) + 1))


def assert_disjoint(calib: Sequence[bt.Feeds], held_out: Sequence[bt.Feeds]) -> None:
    """Raise when a held-out sentence's tokens occur in a calibration row."""
    rows = [row for feeds in calib for row in _sentence_tokens(feeds)]
    shared = {sentence for feeds in held_out for sentence in _sentence_tokens(feeds)
              if any(_contains(row, sentence) for row in rows)}  # fmt: skip
    if shared:
        raise AssertionError(f"{len(shared)} held-out sentence(s) in the calibration rows")


# --- scores ---------------------------------------------------------------------------------


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (average ranks for ties)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for value in np.unique(x):  # ties share their mean rank
            r[x == value] = r[x == value].mean()
        return r

    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


def pair_gaps(sims: np.ndarray) -> np.ndarray:
    """|sims[a] - sims[b]| of every pair of pairs (a, b), in ``ranking_agreement``'s order."""
    return np.array([abs(sims[a] - sims[b])
                     for a, b in itertools.combinations(range(len(sims)), 2)])  # fmt: skip


def flipped_gaps(sims: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``ref``'s gaps of the pairs of pairs that ``sims`` orders otherwise, ascending."""
    pairs = list(itertools.combinations(range(len(ref)), 2))
    return np.sort([abs(ref[a] - ref[b]) for a, b in pairs
                    if np.sign(sims[a] - sims[b]) != np.sign(ref[a] - ref[b])])  # fmt: skip


def scores(emb: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Cosine of each row of ``emb`` with ``ref``'s, and the ranking of ``PAIRS``' similarities:
    agreement, Spearman, the mean error of the similarities and the largest float32 gap
    between two pairs' similarities that the ranking no longer keeps (0 when none)."""
    cos = np.sum(emb * ref, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
    sims, ref_sims = bt.pair_similarities(emb), bt.pair_similarities(ref)
    flipped = flipped_gaps(sims, ref_sims)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "pair_order_agreement": bt.ranking_agreement(sims, ref_sims),
            "spearman": spearman(sims, ref_sims),
            "similarity_error_mean": float(np.abs(sims - ref_sims).mean()),
            "flipped_gap_max": float(flipped[-1]) if len(flipped) else 0.0}  # fmt: skip


# --- systems --------------------------------------------------------------------------------


def check_systems(systems: Iterable[str]) -> None:
    """Raise ValueError for a system that is not ``tvm-onednn:<calib_mode>`` or a peer."""
    bad = [s for s in systems if s not in PEERS and not s.startswith("tvm-onednn:")]
    if bad:
        raise ValueError(f"unknown MiniLM systems {bad}; known: tvm-onednn:<calib_mode>, "
                         f"{list(PEERS)}")  # fmt: skip


def _peer_missing(system: str) -> str | None:
    modules = {"ort": ("onnxruntime.quantization",), "nncf": ("nncf", "openvino")}
    try:
        for module in modules.get(system.split(":")[0], ()):
            __import__(module)
    except ImportError as err:
        return f"skipped: {err}"
    return None


def reference_precisions(seq: int, ref: np.ndarray,
                         dtypes: Sequence[str] = REFERENCE_DTYPES) -> dict[str, dict]:  # fmt: skip
    """:func:`scores` against ``ref`` of the model run entirely in each of ``dtypes``."""
    import torch

    from tvm_onednn.models.minilm import minilm_torch

    results: dict[str, dict] = {}
    for name in dtypes:
        model = minilm_torch().to(getattr(torch, name))

        def infer(feeds: bt.Feeds) -> np.ndarray:
            with torch.no_grad():
                inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
                return model(**inputs)[1].float().numpy()

        results[name] = scores(bt.embed_sentences(infer, 1, seq), ref)
    return results


def _system(name: str, n_calib: int, target: dict[str, Any]) -> bt.EmbeddingSystem:
    kind, _, variant = name.partition(":")
    if kind == "tvm-onednn":
        return bt.TvmOnednnSystem(name, target, calib_mode=variant, calib_batches=n_calib)
    if kind == "ort":
        return bt.OnnxRuntimeSystem(name, bert_optimizer=variant == "bert-dynamic", int8=True)
    return bt.OpenVinoSystem(name, int8=True, calib_batches=n_calib)


def _run(name: str, n_calib: int, workload: Workload, ref: np.ndarray, target: dict[str, Any],
         threads: int) -> dict[str, Any]:  # fmt: skip
    """Build ``name`` (calibrated on ``n_calib`` rows) and score it on the held-out set."""
    note = _peer_missing(name)
    if note:
        return {"note": note}
    seq = workload.inputs["input_ids"].shape[1]
    system = _system(name, n_calib, target)
    start = time.perf_counter()
    try:
        system.build(workload, threads)
        assert system.infer is not None
        emb = bt.embed_sentences(system.infer, 1, seq)
    except Exception as err:  # noqa: BLE001 (a peer failing is a result, not a crash)
        return {"note": f"failed: {type(err).__name__}: {str(err)[:200]}"}
    result: dict[str, Any] = scores(emb, ref) | {
        "quantize_seconds": round(time.perf_counter() - start, 1)}
    if "layers_quantized" in system.settings():
        result["layers_quantized"] = system.settings()["layers_quantized"]
    return result


def minilm_protocol(
    n_calib_list: Sequence[int] = N_CALIB,
    systems: Sequence[str] = SYSTEMS,
    seq: int = SEQ,
    threads: int = 1,
) -> dict[str, Any]:
    """MiniLM int8 vs float32 on the held-out sentences (see the module docstring).

    Calibrated systems run once per ``N`` in ``n_calib_list`` (1 <= N <= 16 rows),
    calibration-free ones once. Returns a JSON-able dict with one entry per run in ``runs``.
    """
    from tvm.target import codegen

    from tvm_onednn.models.minilm import minilm_missing

    check_systems(systems)
    bad = [n for n in n_calib_list if not 1 <= n <= len(bt.CALIB_SENTENCES)]
    if bad or not 2 <= seq <= bt.MAX_SEQ:
        raise ValueError(f"need 1 <= N <= {len(bt.CALIB_SENTENCES)} calibration rows and "
                         f"2 <= seq <= {bt.MAX_SEQ}, got N {bad} and seq {seq}")  # fmt: skip
    if minilm_missing():
        raise RuntimeError(f"MiniLM is not available: {minilm_missing()}")
    held_out = bt.sentence_chunks(1, seq)
    for n in n_calib_list:
        assert_disjoint(bt.calibration_feeds(1, seq, n), held_out)
    target = {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu())}
    workload = Workload(f"minilm-s{seq}", 1, bt.minilm_model(1, seq), held_out[0])
    fp32 = bt.TvmOnednnSystem("tvm-onednn", target)
    fp32.build(workload, threads)
    assert fp32.infer is not None
    ref = bt.embed_sentences(fp32.infer, 1, seq)
    out: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2", "seq": seq, "batch": 1,
        "n_eval": len(bt.EVAL_SENTENCES), "n_pairs": len(bt.PAIRS),
        "reference": "tvm-onednn float32",
        "ranking": "pair_order_agreement: fraction of pairs of PAIRS ordered by similarity as "
                   "float32 orders them; spearman: rank correlation of the PAIRS similarities; "
                   "similarity_error_mean: mean |similarity - float32's|; flipped_gap_max: "
                   "the largest float32 gap between two pairs' similarities not kept",
        "runs": [],
    }  # fmt: skip
    ref_gaps = np.sort(pair_gaps(bt.pair_similarities(ref)))
    out["float32_closest_pair_gaps"] = [float(g) for g in ref_gaps[:3]]
    if _peer_missing("ort:dynamic") is None:
        check = bt.OnnxRuntimeSystem("onnxruntime")
        check.build(workload, threads)
        assert check.infer is not None
        emb = bt.embed_sentences(check.infer, 1, seq)
        out["fp32_check"] = {"onnxruntime_fp32_" + k: v for k, v in scores(emb, ref).items()}
    out["references"] = reference_precisions(seq, ref)
    free = [s for s in systems if s in CALIBRATION_FREE]
    if free:
        out["runs"].append({"n_calib": 0, "results": {
            s: _run(s, 0, workload, ref, target, threads) for s in free}})  # fmt: skip
    calibrated = [s for s in systems if s not in CALIBRATION_FREE]
    for n in n_calib_list if calibrated else ():
        out["runs"].append({"n_calib": n, "results": {
            s: _run(s, n, workload, ref, target, threads) for s in calibrated}})  # fmt: skip
    return out


def table(block: dict[str, Any]) -> str:
    """The summary lines of :func:`minilm_protocol`'s result."""
    lines = [f"minilm: {block['n_eval']} held-out sentences, seq {block['seq']}, "
             f"{block['n_pairs']} pairs; vs {block['reference']}"]  # fmt: skip
    if "float32_closest_pair_gaps" in block:
        gaps = ", ".join(f"{g:.4f}" for g in block["float32_closest_pair_gaps"])
        lines.append(f"  float32's closest similarities of two pairs differ by {gaps}")
    if "fp32_check" in block:
        lines.append(f"  onnxruntime float32 cosine min "
                     f"{block['fp32_check']['onnxruntime_fp32_cosine_min']:.6f}")  # fmt: skip
    rows = [(f"  reference: in {name:<19}", r) for name, r in block.get("references", {}).items()]
    rows += [(f"  N={run['n_calib']:<4} {system:<26}", r)
             for run in block["runs"] for system, r in run["results"].items()]  # fmt: skip
    for head, r in rows:
        if "note" in r:
            lines.append(f"{head} {r['note']}")
            continue
        lines.append(f"{head} cosine mean {r['cosine_mean']:.5f} min {r['cosine_min']:.5f}"
                     f"  pair order {r['pair_order_agreement']:.3f}"
                     f"  spearman {r['spearman']:.3f}"
                     f"  sim err {r['similarity_error_mean']:.4f}"
                     f"  flips up to {r['flipped_gap_max']:.4f}")  # fmt: skip
    return "\n".join(lines)
