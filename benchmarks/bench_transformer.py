"""all-MiniLM-L6-v2 sentence embeddings: tvm-onednn (fp32, int8) vs ONNX Runtime, OpenVINO, TVM.

    python benchmarks/bench_transformer.py --batches 1,8 --seqs 128,32 --rounds 5 \\
        --out bench-results/transformer.json

The model is ``tvm_onednn.models.minilm`` (real weights, BertModel + mean pooling, L2
normalised). Every system runs in this one process with the same threads on the same token
ids: rows of real English text (``EVAL_SENTENCES`` run together, so every row fills the
sequence); int8 systems calibrate on other sentences (``CALIB_SENTENCES``). Timing is the
interleaved round-robin of ``harness.py``; then every system embeds each evaluation sentence
on its own (padded to the workload's sequence) for the accuracy columns: cosine of an int8
system's embeddings with its fp32 counterpart's, and how well the similarities of
``PAIRS`` keep onnxruntime fp32's ranking.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import datetime
import functools
import io
import itertools
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from cli import add_common_arguments, prepare
from harness import Result, System, Workload, format_table, machine_info, parse_list, run_workload
from systems import _property_text, ort_session

# Our own text. The first 24 are 12 pairs of graded relatedness (paraphrase, same topic,
# loosely related, unrelated); ``PAIRS`` scores them and some cross pairs.
EVAL_SENTENCES = (
    "The train to the airport leaves every twenty minutes from platform four.",
    "Trains for the airport depart from platform four three times an hour.",
    "She planted tomatoes and basil along the sunny side of the garden.",
    "Her vegetable patch gets the afternoon sun, so the tomatoes grow well.",
    "The committee postponed its decision until the budget figures are final.",
    "Nobody could agree on how much money the new library should cost.",
    "A sudden storm flooded the basement and ruined several boxes of old photos.",
    "Insurance rarely covers water damage caused by heavy rain.",
    "The violinist tuned her instrument quietly before the concert began.",
    "Our dog refuses to walk past the neighbour's noisy lawn mower.",
    "Compilers translate source code into instructions a processor can execute.",
    "Good evening, the kitchen closes at ten but the bar stays open late.",
    "He forgot his umbrella on the bus and walked home in the rain.",
    "Walking home soaked, he realised he had left his umbrella behind.",
    "The museum's new exhibition shows maps drawn by medieval sailors.",
    "Old navigation charts reveal how explorers imagined unknown coasts.",
    "Drink plenty of water when you run long distances in hot weather.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "Interest rates rose again, making mortgages more expensive for families.",
    "Buying a house has become harder since borrowing costs went up.",
    "The children built a snowman with a carrot for its nose.",
    "Please restart the router if the wireless connection keeps dropping.",
    "A rare comet will be visible to the naked eye next week.",
    "The spreadsheet crashed before I could save the quarterly report.",
)
CALIB_SENTENCES = (
    "The bakery on the corner sells fresh bread before sunrise.",
    "Volunteers cleaned the beach after the summer festival.",
    "Our flight was delayed because of fog over the mountains.",
    "The software update fixed the battery drain on older phones.",
    "A quiet library is the best place to prepare for exams.",
    "The orchestra rehearsed the symphony for three long evenings.",
    "Farmers hope the rain arrives before the harvest season.",
    "He repaired the bicycle chain with a borrowed tool kit.",
    "The city council approved a new park near the river.",
    "Solar panels on the roof now supply most of our electricity.",
    "She translated the letter from Portuguese into English.",
    "The detective noticed muddy footprints near the back door.",
    "Fresh paint made the small apartment feel much brighter.",
    "Researchers measured how quickly the glacier is melting.",
    "The referee stopped the match when the lights failed.",
    "Grandmother keeps her recipes in a worn leather notebook.",
)
#: Sentence pairs (indices into EVAL_SENTENCES) whose similarities are ranked.
PAIRS = tuple((i, i + 1) for i in range(0, 24, 2)) + (
    (0, 12), (2, 17), (4, 18), (6, 12), (10, 23), (14, 22), (16, 20), (19, 5),
)  # fmt: skip
LAYERS = 6  # encoder layers of all-MiniLM-L6-v2
HEADS, HIDDEN = 12, 384
MAX_SEQ = 512  # the model's position embeddings
#: The ops an encoder layer spends its time in (the offload summary reports them per layer).
HEAVY_OPS = ("relax.matmul", "relax.nn.layer_norm", "relax.nn.softmax", "relax.nn.gelu")

Feeds = dict[str, np.ndarray]
Infer = Callable[[Feeds], np.ndarray]  # feeds -> sentence embeddings [batch, 384]


# --- inputs ------------------------------------------------------------------------------


@functools.cache
def _tokenizer() -> Any:
    from transformers import AutoTokenizer
    from tvm_onednn.models.minilm import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


def tokenize(texts: Sequence[str], seq: int) -> Feeds:
    """Token ids, mask and type ids ``[len(texts), seq]`` (int64), padded or truncated."""
    from tvm_onednn.models.minilm import MINILM_INPUTS

    enc = _tokenizer()(list(texts), padding="max_length", truncation=True, max_length=seq,
                       return_tensors="np")  # fmt: skip
    return {name: np.ascontiguousarray(enc[name], dtype=np.int64) for name in MINILM_INPUTS}


def packed_feeds(texts: Sequence[str], batch: int, seq: int, start: int = 0) -> Feeds:
    """``batch`` rows of running text: row ``i`` starts at sentence ``start + i`` and goes on
    through the following ones (cyclically) until ``seq`` tokens are filled."""
    n = len(texts)
    rows = [" ".join(texts[(start + i + j) % n] for j in range(n)) for i in range(batch)]
    return tokenize(rows, seq)


def calibration_feeds(batch: int, seq: int, num_batches: int) -> list[Feeds]:
    """The calibration set of every int8 system, from ``CALIB_SENTENCES`` only."""
    return [packed_feeds(CALIB_SENTENCES, batch, seq, start=k * batch) for k in range(num_batches)]


def sentence_chunks(batch: int, seq: int) -> list[Feeds]:
    """Every evaluation sentence on its own row, in chunks of ``batch`` (the last chunk
    filled up with the first sentences), padded to ``seq``."""
    texts = list(EVAL_SENTENCES)
    texts += texts[: -len(texts) % batch]
    return [tokenize(texts[i : i + batch], seq) for i in range(0, len(texts), batch)]


@functools.cache
def minilm_model(batch: int, seq: int, dynamic: bool = False) -> onnx.ModelProto:
    """The exported model, cached (``batch``/``seq`` only shape the trace when dynamic)."""
    from tvm_onednn.models.minilm import minilm_onnx

    return minilm_onnx(batch, seq, dynamic=dynamic)


# --- systems -----------------------------------------------------------------------------


class EmbeddingSystem(System):
    """A system whose ``infer(feeds)`` returns sentence embeddings; ``build`` keeps it for the
    accuracy pass. ``fp32_of`` names the fp32 system an int8 one is compared to."""

    precision = "fp32"
    fp32_of: str | None = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.infer: Infer | None = None
        self._settings: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision} | self._settings

    @abc.abstractmethod
    def make_infer(self, workload: Workload, threads: int) -> Infer:
        """Compile/load for ``workload`` and return the inference function."""

    def runner(self, feeds: Feeds) -> Callable[[], np.ndarray]:
        """The timed call on fixed ``feeds`` (systems may convert the inputs once here)."""
        infer = self.infer
        assert infer is not None
        return lambda: infer(feeds)

    def build(self, workload: Workload, threads: int) -> Callable[[], np.ndarray]:
        self.infer = None
        self.infer = self.make_infer(workload, threads)
        return self.runner(workload.inputs)


class TvmVmSystem(EmbeddingSystem):
    """A TVM executable run by the Relax VM; inputs become TVM tensors once, outside timing."""

    def __init__(self, name: str, target: dict[str, Any]) -> None:
        super().__init__(name)
        self.target = target
        self._main: Any = None

    @abc.abstractmethod
    def executable(self, workload: Workload, threads: int) -> Any:
        """The compiled module for ``workload``."""

    def make_infer(self, workload: Workload, threads: int) -> Infer:
        import tvm
        from tvm import relax

        self._main = relax.VirtualMachine(self.executable(workload, threads), tvm.cpu())["main"]
        main = self._main

        def infer(feeds: Feeds) -> np.ndarray:
            return main(*(tvm.runtime.tensor(x) for x in feeds.values()))[1].numpy()

        return infer

    def runner(self, feeds: Feeds) -> Callable[[], np.ndarray]:
        import tvm

        main, args = self._main, [tvm.runtime.tensor(x) for x in feeds.values()]
        return lambda: main(*args)[1].numpy()


def _summary(mod: Any) -> dict[str, Any]:
    from tvm_onednn import offload_summary

    return offload_summary(mod).as_dict()


class TvmOnednnSystem(TvmVmSystem):
    """``tvm_onednn.from_onnx`` -> ``tvm.compile(..., relax_pipeline="onednn")``.

    ``dynamic``: the model exported with free batch and sequence is compiled **once** and
    that executable serves every workload (its build time is reported on the first).
    ``calib_mode``: quantized by ``tvm_onednn.quantize`` first (int8), calibrated on
    ``calib_batches`` batches of ``CALIB_SENTENCES`` unless ``"none"`` (dynamic scales).
    """

    peer = False

    def __init__(self, name: str, target: dict[str, Any], dynamic: bool = False,
                 calib_mode: str | None = None, calib_batches: int = 4) -> None:  # fmt: skip
        super().__init__(name, target)
        self.dynamic, self.calib_mode, self.calib_batches = dynamic, calib_mode, calib_batches
        if calib_mode is not None:
            self.precision, self.fp32_of = "int8", "tvm-onednn"
        self._cached: Any = None

    def executable(self, workload: Workload, threads: int) -> Any:
        import tvm
        import tvm_onednn

        tvm_onednn.set_num_threads(threads)
        if self._cached is not None:
            self._settings["compiled_once"] = True
            return self._cached
        batch, seq = workload.inputs["input_ids"].shape
        model = minilm_model(batch, seq, dynamic=True) if self.dynamic else workload.model
        mod = tvm_onednn.from_onnx(model)
        if self.calib_mode is not None:
            calib = None if self.calib_mode == "none" else calibration_feeds(
                batch, seq, self.calib_batches)  # fmt: skip
            mod, report = tvm_onednn.quantize(mod, calib, calib_mode=self.calib_mode,
                                              return_report=True)  # fmt: skip
            self._settings |= {
                "calib_mode": self.calib_mode,
                "calib_batches": 0 if calib is None else len(calib),
                "layers_quantized": f"{report.num_quantized}/{report.num_layers}",
                "float_layers": dict(Counter(f"{layer.kind}: {layer.reason}"
                                             for layer in report.layers if not layer.quantized)),
            }
        self._settings |= {"target": self.target, "dynamic": self.dynamic,
                           "offload": _summary(mod)}  # fmt: skip
        executable = tvm.compile(mod, tvm.target.Target(self.target), relax_pipeline="onednn")
        if self.dynamic:
            self._cached = executable
        return executable


class TvmSystem(TvmVmSystem):
    """TVM alone: the same ``tvm_onednn.from_onnx`` import at static shapes, then TVM's
    untuned ``"default"`` pipeline, or MetaSchedule-tuned (``tune_trials`` > 0).

    Tuning follows TVM's ``static_shape_tuning_pipeline`` (legalize with the ``"zero"``
    pipeline, tune TIR kernels, apply the records, compile) but tunes only the
    ``tune_tasks`` kernels with the most work (FLOPs x uses; the matmuls): with all ~25
    kernels MetaSchedule's scheduler spends a small budget on the first few trivial ones.
    Records are kept in ``work_dir/b<batch>_s<seq>`` and reused by later runs without tuning
    again (``retune`` tunes again, adding to them). A workload whose estimated call time
    (from an earlier workload's seconds per token) exceeds ``budget_s`` is skipped, and one
    whose first call exceeds it is reported as skipped.
    """

    def __init__(self, name: str, target: dict[str, Any], budget_s: float, tune_trials: int = 0,
                 tune_tasks: int = 6, work_dir: Path | None = None,
                 retune: bool = False) -> None:  # fmt: skip
        super().__init__(name, target)
        self.budget_s, self.tune_trials, self.tune_tasks = budget_s, tune_trials, tune_tasks
        self.work_dir, self.retune = work_dir, retune
        self.seconds_per_token: float | None = None

    def skip_reason(self, workload: Workload) -> str | None:
        tokens = workload.inputs["input_ids"].size
        if self.seconds_per_token and self.seconds_per_token * tokens > self.budget_s:
            estimate = self.seconds_per_token * tokens
            return f"estimated {estimate:.1f} s per call > budget {self.budget_s:g} s"
        return None

    def executable(self, workload: Workload, threads: int) -> Any:
        import tvm
        import tvm_onednn

        target = tvm.target.Target(self.target)
        mod = tvm_onednn.from_onnx(workload.model)
        if self.tune_trials <= 0:
            self._settings = {"target": self.target, "relax_pipeline": "default"}
            return tvm.compile(mod, target, relax_pipeline="default")
        from tvm_onednn.tuning import tuning_target

        batch, seq = workload.inputs["input_ids"].shape
        work_dir = Path(self.work_dir or "bench-results/transformer-tuning") / f"b{batch}_s{seq}"
        target = tuning_target(target)  # num-cores set
        return tvm.compile(self.tuned(mod, target, work_dir), target, relax_pipeline="default")

    def tuned(self, mod: Any, target: Any, work_dir: Path) -> Any:
        """``mod`` legalized, its heaviest kernels tuned (or records reused), records applied."""
        from tvm import relax, transform
        from tvm.s_tir import meta_schedule as ms
        from tvm_onednn.tuning import count_records

        with target:
            mod = transform.Sequential([
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.get_pipeline("zero"),
            ])(mod)  # fmt: skip
        before = count_records(str(work_dir)) if work_dir.exists() else 0
        trials = self.tune_trials if self.retune or before == 0 else 0
        start = time.perf_counter()
        tasks = ms.relax_integration.extract_tasks(mod, target)
        tasks.sort(key=lambda t: -t.weight * _flops(t.dispatched[0]))
        tasks = tasks[: self.tune_tasks]
        if trials:
            _tune(tasks, target, work_dir, trials)
        self._settings = {
            "target": str(target), "work_dir": str(work_dir), "trial_budget": self.tune_trials,
            "trials_this_run": trials, "tuned_tasks": [t.task_name for t in tasks],
            "records_before": before, "records_after": count_records(str(work_dir)),
            "tuning_seconds": round(time.perf_counter() - start, 1),
        }  # fmt: skip
        with target, ms.database.JSONDatabase(work_dir=str(work_dir)):
            return relax.transform.MetaScheduleApplyDatabase()(mod)

    def make_infer(self, workload: Workload, threads: int) -> Infer:
        infer = super().make_infer(workload, threads)
        start = time.perf_counter()
        infer(workload.inputs)
        seconds = time.perf_counter() - start
        self.seconds_per_token = seconds / workload.inputs["input_ids"].size
        if seconds > self.budget_s:
            raise OverBudget(f"first call took {seconds:.1f} s > budget {self.budget_s:g} s")
        return infer


def _tune(tasks: list[Any], target: Any, work_dir: Path, trials: int) -> None:
    """MetaSchedule on ``tasks`` (``trials`` in all, evenly spread), records into ``work_dir``.

    With tvm-onednn's worker set-up (``tvm_onednn.tuning.workers``): only the CPU's tensor
    intrinsics imported, pooled build workers, 60 s timeouts, TVM's pool sized for the
    measurements; MetaSchedule's own LocalBuilder timed out on every build here.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm_onednn.tuning import workers

    work_dir.mkdir(parents=True, exist_ok=True)
    workers.import_cpu_tensor_intrinsics(target)
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")  # its console echo: tables
    level = ms_logger.level
    ms_logger.setLevel(logging.WARNING)  # the full log stays in work_dir/logs
    per_task = -(-trials // len(tasks))
    try:
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, str(work_dir), strategy=ms.search_strategy.EvolutionarySearch(
                population_size=int(min(512, max(64, 4 * per_task)))))  # fmt: skip
        cores = int(target.attrs["num-cores"])
        builder = workers.PooledBuilder(timeout_sec=60.0)
        runner = ms.runner.LocalRunner(timeout_sec=60.0,
                                       initializer=workers.thread_pool_initializer(cores))
        try:
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                          max_trials_global=trials, max_trials_per_task=per_task,
                          num_trials_per_iter=min(8, per_task), builder=builder, runner=runner,
                          database=ms.database.JSONDatabase(work_dir=str(work_dir)))
        finally:
            builder.shutdown()
            runner.pool.shutdown()
    finally:
        ms_logger.setLevel(level)


def _flops(mod: Any) -> float:
    """TVM's FLOP estimate of a tuning task's module."""
    from tvm.s_tir.analysis import estimate_tir_flops

    return float(estimate_tir_flops(mod))


class OverBudget(RuntimeError):
    """A system too slow for the time budget (reported as skipped)."""


class OnnxRuntimeSystem(EmbeddingSystem):
    """ONNX Runtime CPU provider (``ORT_ENABLE_ALL``, ``threads`` intra-op threads).

    ``bert_optimizer``: the graph is first rewritten by ``onnxruntime.transformers.optimizer``
    (``model_type="bert"``: fused attention, LayerNorm, GELU); ``int8``: then
    ``quantize_dynamic`` (s8 weights, u8 activations with per-call scales).
    """

    def __init__(self, name: str, bert_optimizer: bool = False, int8: bool = False) -> None:
        super().__init__(name)
        self.bert_optimizer, self.int8 = bert_optimizer, int8
        if int8:
            self.precision = "int8"
            self.fp32_of = "onnxruntime-bert" if bert_optimizer else "onnxruntime"

    def make_infer(self, workload: Workload, threads: int) -> Infer:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model.onnx")
            path.write_bytes(workload.model.SerializeToString())
            if self.bert_optimizer:
                from onnxruntime.transformers.optimizer import optimize_model

                optimized = optimize_model(str(path), model_type="bert", num_heads=HEADS,
                                           hidden_size=HIDDEN, opt_level=1)  # fmt: skip
                fused = optimized.get_fused_operator_statistics()
                self._settings["fused_ops"] = {k: v for k, v in fused.items() if v}
                path = Path(tmp, "optimized.onnx")
                optimized.save_model_to_file(str(path))
            if self.int8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                # The fused graph has contrib ops without shape inference: their outputs are float.
                quantize_dynamic(str(path), str(Path(tmp, "int8.onnx")),
                                 weight_type=QuantType.QInt8,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                path = Path(tmp, "int8.onnx")
                self._settings["quantization"] = "quantize_dynamic, QInt8 weights"
            session = ort_session(str(path), threads)
        self._settings |= {"graph_optimization_level": "ORT_ENABLE_ALL",
                           "intra_op_num_threads": threads}  # fmt: skip
        return lambda feeds: session.run(["sentence_embedding"], feeds)[0]


class OpenVinoSystem(EmbeddingSystem):
    """OpenVINO CPU plugin as in ``systems.OpenVinoSystem`` (f32 precision hint, LATENCY,
    one stream of ``threads`` threads); ``int8``: ``nncf.quantize`` with
    ``ModelType.TRANSFORMER`` on the calibration set first."""

    def __init__(self, name: str, int8: bool = False, calib_batches: int = 4) -> None:
        super().__init__(name)
        self.int8, self.calib_batches = int8, calib_batches
        if int8:
            self.precision, self.fp32_of = "int8", "openvino"

    def make_infer(self, workload: Workload, threads: int) -> Infer:
        import openvino as ov

        model = ov.convert_model(io.BytesIO(workload.model.SerializeToString()))
        if self.int8:
            import nncf

            batch, seq = workload.inputs["input_ids"].shape
            calib = calibration_feeds(batch, seq, self.calib_batches)
            model = nncf.quantize(model, nncf.Dataset(calib), subset_size=len(calib),
                                  model_type=nncf.ModelType.TRANSFORMER)  # fmt: skip
            self._settings |= {"nncf_model_type": "TRANSFORMER", "calib_batches": len(calib)}
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)}  # fmt: skip
        compiled = ov.Core().compile_model(model, "CPU", config)
        self._settings |= {k: _property_text(compiled.get_property(k)) for k in config}
        request = compiled.create_infer_request()
        output = compiled.output("sentence_embedding")

        def infer(feeds: Feeds) -> np.ndarray:
            request.infer(feeds, share_inputs=True)
            return request.get_tensor(output).data.copy()

        return infer


SYSTEM_NAMES = (
    "tvm-onednn", "tvm-onednn-dyn", "tvm-onednn-int8", "tvm-onednn-int8-dyn",
    "onnxruntime", "onnxruntime-bert", "onnxruntime-int8", "onnxruntime-bert-int8",
    "openvino", "openvino-int8", "tvm-default", "tvm-tuned",
)  # fmt: skip


def make_systems(
    names: Sequence[str], args: argparse.Namespace, mcpu: str
) -> list[EmbeddingSystem]:
    """Instantiate systems by name (see ``SYSTEM_NAMES``)."""
    target = {"kind": "llvm", "mcpu": mcpu}
    cb = args.calib_batches
    factories: dict[str, Callable[[], EmbeddingSystem]] = {
        "tvm-onednn": lambda: TvmOnednnSystem("tvm-onednn", target),
        "tvm-onednn-dyn": lambda: TvmOnednnSystem("tvm-onednn-dyn", target, dynamic=True),
        "tvm-onednn-int8": lambda: TvmOnednnSystem(
            "tvm-onednn-int8", target, calib_mode=args.calib_mode, calib_batches=cb),
        "tvm-onednn-int8-dyn": lambda: TvmOnednnSystem(
            "tvm-onednn-int8-dyn", target, calib_mode="none"),
        "onnxruntime": lambda: OnnxRuntimeSystem("onnxruntime"),
        "onnxruntime-bert": lambda: OnnxRuntimeSystem("onnxruntime-bert", bert_optimizer=True),
        "onnxruntime-int8": lambda: OnnxRuntimeSystem("onnxruntime-int8", int8=True),
        "onnxruntime-bert-int8": lambda: OnnxRuntimeSystem(
            "onnxruntime-bert-int8", bert_optimizer=True, int8=True),
        "openvino": lambda: OpenVinoSystem("openvino"),
        "openvino-int8": lambda: OpenVinoSystem("openvino-int8", int8=True, calib_batches=cb),
        "tvm-default": lambda: TvmSystem("tvm-default", target, args.tvm_budget),
        "tvm-tuned": lambda: TvmSystem("tvm-tuned", target, args.tvm_budget, args.tune_trials,
                                       args.tune_tasks, args.tune_dir, args.retune),
    }  # fmt: skip
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {list(SYSTEM_NAMES)}")
    return [factories[n]() for n in names]


# --- accuracy ----------------------------------------------------------------------------


def pair_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of ``PAIRS``."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return np.array([float(e[i] @ e[j]) for i, j in PAIRS])


def ranking_agreement(sims: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of pairs-of-pairs that ``sims`` orders as ``ref`` does (1.0: same ranking)."""
    pairs = list(itertools.combinations(range(len(ref)), 2))
    same = sum(np.sign(sims[a] - sims[b]) == np.sign(ref[a] - ref[b]) for a, b in pairs)
    return float(same / len(pairs))


def embed_sentences(infer: Infer, batch: int, seq: int) -> np.ndarray:
    """Embeddings of every ``EVAL_SENTENCES`` entry, each on its own padded row."""
    out = np.concatenate([infer(feeds) for feeds in sentence_chunks(batch, seq)])
    return out[: len(EVAL_SENTENCES)].astype(np.float64)


def accuracy(systems: Sequence[EmbeddingSystem], ok: set[str], batch: int, seq: int,
             reference: str = "onnxruntime") -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per built system: cosine with its fp32 counterpart (``fp32_of``, else ``reference``)
    and the ranking agreement of its ``PAIRS`` similarities with ``reference``'s."""
    emb = {s.name: embed_sentences(s.infer, batch, seq) for s in systems
           if s.name in ok and s.infer is not None}  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    ref_sims = pair_similarities(emb[reference]) if reference in emb else None
    for s in systems:
        if s.name not in emb:
            continue
        against = s.fp32_of if s.fp32_of in emb else reference
        entry: dict[str, Any] = {"cosine_vs": against if against != s.name else None}
        if against in emb and against != s.name:
            a, b = emb[s.name], emb[against]
            cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            entry |= {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
        if ref_sims is not None:
            entry["rank_agreement"] = ranking_agreement(pair_similarities(emb[s.name]), ref_sims)
        out[s.name] = entry
    return out


# --- report ------------------------------------------------------------------------------


def offload_lines(settings: dict[str, Any]) -> list[str]:
    """``offload_summary`` in short: regions, heavy ops left with TVM per encoder layer (all
    of them are inside the layers but the embeddings' layer_norm), every op left with TVM."""
    summary = settings.get("offload")
    if not summary:
        return []
    kept = summary["kept_ops"]
    heavy = ", ".join(f"{op.removeprefix('relax.')} {kept.get(op, 0) / LAYERS:g}"
                      for op in HEAVY_OPS)  # fmt: skip
    rest = ", ".join(f"{op.removeprefix('relax.')} x{n}" for op, n in sorted(kept.items()))
    offloaded = sum(summary["offloaded_ops"].values())
    return [f"oneDNN regions {summary['regions']} for {LAYERS} encoder layers; heavy ops kept "
            f"with TVM per layer: {heavy}",
            f"ops offloaded {offloaded}, kept with TVM {sum(kept.values())} (embeddings, "
            f"mask, pooling and layers): {rest or 'none'}"]  # fmt: skip


def finish_results(results: list[Result], systems: Sequence[EmbeddingSystem],
                   acc: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """Results as dicts with precision, accuracy and the ratio to the best peer of the same
    precision (throughput / that peer's; > 1: faster)."""
    by_name = {s.name: s for s in systems}
    rows = []
    for r in results:
        if r.status == "failed" and r.error and OverBudget.__name__ in r.error:
            r.status = "skipped"
        rows.append(dataclasses.asdict(r) | {"precision": by_name[r.system].precision,
                                             "accuracy": acc.get(r.system)})  # fmt: skip
    for precision in ("fp32", "int8"):
        peers = [row for row in rows if row["peer"] and row["precision"] == precision
                 and row["images_per_second"]]  # fmt: skip
        best = max(peers, key=lambda row: row["images_per_second"], default=None)
        for row in rows:
            if best and row["precision"] == precision and row["images_per_second"]:
                ratio = row["images_per_second"] / best["images_per_second"]
                row["vs_best_peer_same_precision"] = ratio
                row["best_peer_same_precision"] = best["system"]
    return rows


def format_workload(rows: list[dict[str, Any]], isa: str, threads: int) -> str:
    """Per workload: latency, ratios and accuracy of each system, then the offload summary."""
    head = (f"{'system':<22}{'prec':>5}{'median ms':>11}{'vs best peer':>14}{'vs best same':>14}"
            f"{'cos fp32 (min)':>20}{'rank agr':>10}")  # fmt: skip
    first = rows[0]
    lines = [f"== {first['model']} batch {first['batch']}  (oneDNN ISA {isa}, {threads} threads)",
             head]  # fmt: skip
    notes: list[str] = []
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"{row['system']:<22}{row['precision']:>5}  {row['status']}: "
                         f"{(row['error'] or '')[:80]}")  # fmt: skip
            continue
        acc = row["accuracy"] or {}
        cos = (f"{acc['cosine_mean']:.5f} ({acc['cosine_min']:.4f})" if "cosine_mean" in acc
               else "-")  # fmt: skip
        rank = f"{acc['rank_agreement']:.3f}" if "rank_agreement" in acc else "-"
        ratio = f"{row['vs_best_peer']:.2f}x" if row["vs_best_peer"] else "-"
        same = row.get("vs_best_peer_same_precision")
        lines.append(f"{row['system']:<22}{row['precision']:>5}{row['median_ms']:>11.2f}{ratio:>14}"
                     f"{(f'{same:.2f}x' if same else '-'):>14}{cos:>20}{rank:>10}")  # fmt: skip
        for line in offload_lines(row["settings"]):
            notes.append(f"  {row['system']}: {line}")
        if row["settings"].get("layers_quantized"):
            quantized = row["settings"]["layers_quantized"]
            notes.append(f"  {row['system']}: layers quantized {quantized}")
            for reason, n in row["settings"].get("float_layers", {}).items():
                notes.append(f"    {n} float32: {reason}")
    return "\n".join(lines + notes)


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, ["minilm"], SYSTEM_NAMES, "bench-results/transformer.json")
    p.set_defaults(models="minilm", batches="1,8")
    p.add_argument("--seqs", default="128,32", help="sequence lengths (128,32)")
    p.add_argument("--calib-batches", type=int, default=4, help="calibration batches (4)")
    p.add_argument("--calib-mode", default="auto",
                   help="tvm-onednn-int8's calib_mode (auto, the library's default: dynamic "
                   "int8 for this matmul-only model)")  # fmt: skip
    p.add_argument("--tvm-budget", type=float, default=10.0,
                   help="seconds one tvm-default/tvm-tuned call may take (10)")
    p.add_argument("--tune-trials", type=int, default=64,
                   help="MetaSchedule trials per workload for tvm-tuned (64)")
    p.add_argument("--tune-tasks", type=int, default=6,
                   help="tvm-tuned: tune this many heaviest kernels, the rest untuned (6)")
    p.add_argument("--tune-dir", type=Path, default=Path("bench-results/transformer-tuning"),
                   help="tuning records, one folder per shape, reused by later runs")
    p.add_argument("--retune", action="store_true", help="tune again where records exist")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, mcpu = prepare(args, ["minilm"])
    from tvm_onednn._ffi_api import cpu_isa
    from tvm_onednn.models.minilm import minilm_missing

    if minilm_missing():
        sys.exit(f"MiniLM is not available: {minilm_missing()}")
    systems = make_systems(parse_list(args.systems), args, mcpu)
    # Smallest workloads first: the TVM budget estimate comes from the earlier ones.
    shapes = [(int(b), int(s)) for b in parse_list(args.batches) for s in parse_list(args.seqs)]
    shapes.sort(key=lambda bs: (bs[0] * bs[1], bs))
    bad = [f"batch {b} seq {s}" for b, s in shapes if b < 1 or not 2 <= s <= MAX_SEQ]
    if bad:
        raise ValueError(f"need batch >= 1 and 2 <= seq <= {MAX_SEQ}, got {', '.join(bad)}")
    if args.tune_tasks < 1 or args.calib_batches < 1:
        raise ValueError(f"--tune-tasks and --calib-batches must be >= 1, got "
                         f"{args.tune_tasks} and {args.calib_batches}")  # fmt: skip
    isa, meta = cpu_isa(), {"benchmark": "transformer", "argv": sys.argv,
                            "options": {k: str(v) for k, v in vars(args).items()} | {"mcpu": mcpu}}
    rows: list[dict[str, Any]] = []
    tables: list[str] = []
    for batch, seq in shapes:
        label = f"minilm-s{seq}"
        print(f"\n[{label} batch {batch}]", flush=True)
        workload = Workload(label, batch, minilm_model(batch, seq),
                            packed_feeds(EVAL_SENTENCES, batch, seq))  # fmt: skip
        results = run_workload(
            workload, systems, threads=args.threads, rounds=args.rounds, warmup=args.warmup,
            block_seconds=args.block_seconds, max_iters=args.max_iters, reference="onnxruntime",
            log=lambda line: print(line, flush=True),
        )  # fmt: skip
        acc = accuracy(systems, {r.system for r in results if r.status == "ok"}, batch, seq)
        workload_rows = finish_results(results, systems, acc)
        rows += workload_rows
        tables.append(format_workload(workload_rows, isa, args.threads))
        meta_now = meta | {"machine": machine_info(args.threads) | {"onednn_isa": isa},
                           "finished": datetime.datetime.now(datetime.UTC).isoformat()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta_now, "results": rows}, indent=1) + "\n")
    print(format_table([Result(**{k: v for k, v in row.items() if k in Result.__dataclass_fields__})
                        for row in rows]))  # fmt: skip
    print("\n" + "\n\n".join(tables))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
