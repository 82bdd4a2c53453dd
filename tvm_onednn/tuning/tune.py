"""``tune``: MetaSchedule autotuning of what stays with TVM after the oneDNN offload.

The model is partitioned first: oneDNN regions (convs, matmuls, pools) are not tuned.
What stays with TVM is legalized exactly as the ``"onednn"`` pipeline legalizes it
(:func:`tvm_onednn.pipeline.lower_for_tvm`), its fused PrimFuncs are extracted as
tuning tasks and tuned with MetaSchedule's evolutionary search and XGBoost cost model.
Records go to ``work_dir`` (MetaSchedule's JSON database, appended to: running again on
the same directory keeps the earlier records and adds to them); ``compile_model(mod,
tuning_records=[work_dir, ...])`` applies them.

Note on the crash seen with whole-model tuning (a segfault in ``tvm::ffi::ToJSONGraph``
right after task extraction): that is the first time a tuning run serializes IR (the JSON
database commits each task's workload), and it is an ABI mismatch between apache-tvm 0.27
and apache-tvm-ffi 0.1.15.x, not a property of the model. TVM registers
``PrimType``'s ``__any_hash__`` / ``__any_equal__`` type attributes as raw function
pointers with tvm-ffi 0.1.14's signature, ``int64_t (*)(const Any&)``; tvm-ffi 0.1.15
calls a raw pointer in that slot as ``TVMFFIAny (*)(const Any&) noexcept`` and reads the
returned hash as a 16-byte ``TVMFFIAny``, takes the garbage for an error object and
crashes. Every workload holds PrimTypes (each ``tirx.Var`` has one), so every
MetaSchedule run dies there; ``tvm.ir.save_json(tvm.ir.PrimType("int32"))`` alone
reproduces it. With the pinned ``apache-tvm-ffi==0.1.14.post1`` (the hook ABI the 0.27
wheel was built against) the same code runs and its records apply.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

import tvm
from tvm.s_tir import meta_schedule as ms

from ..pipeline import lower_for_tvm
from ..target import parse_target, with_num_cores
from . import workers
from .database import count_records, open_database
from .progress import ProgressCallback, ProgressFn, TaskStats
from .rpc import check_tracker, rpc_runner

logger = logging.getLogger(__name__)

#: Seconds a build or a measurement may take before it counts as failed. MetaSchedule's
#: 30 s is tight on a loaded 2-core machine.
BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 60.0


def population_size(max_trials: int) -> int:
    """Evolutionary-search population: MetaSchedule's 512 for long runs, less for short ones.

    Each search iteration evolves the whole population through the cost model (about
    50 s per task on a loaded 2-core machine at 512); a run of a few dozen trials
    measures only a handful of candidates per task and gains nothing from that.
    """
    return int(min(512, max(64, 4 * max_trials)))


@dataclass
class TuneReport:
    """What a tuning run did, and where its records are."""

    work_dir: str
    target: str
    tasks: list[TaskStats] = field(default_factory=list)
    records_before: int = 0  # records already in work_dir when the run started
    records_after: int = 0
    trials: int = 0  # candidates measured in this run
    seconds: float = 0.0
    measured_on: str = "this machine"  # or the RPC tracker and key

    @property
    def new_records(self) -> int:
        return self.records_after - self.records_before

    def as_dict(self) -> dict:
        return {
            "work_dir": self.work_dir,
            "target": self.target,
            "tasks": [
                {
                    "name": t.name,
                    "weight": t.weight,
                    "trials": t.trials,
                    "errors": t.errors,
                    "best_us": t.best_us,
                }
                for t in self.tasks
            ],
            "records_before": self.records_before,
            "records_after": self.records_after,
            "trials": self.trials,
            "seconds": self.seconds,
            "measured_on": self.measured_on,
        }

    def __str__(self) -> str:
        if not self.tasks:
            return (
                f"nothing to tune: every op that stays with TVM is free of tunable work, or "
                f"everything runs in oneDNN. {self.records_before} record(s) in {self.work_dir}."
            )
        lines = [
            f"tuned {len(self.tasks)} task(s) (what stays with TVM) for {self.target}",
            f"measured on {self.measured_on}",
            f"{'task':<32} {'weight':>6} {'trials':>6} {'errors':>6} {'best (us)':>10}",
        ]
        for t in self.tasks:
            best = f"{t.best_us:10.1f}" if t.best_us is not None else f"{'-':>10}"
            lines.append(f"{t.name[:32]:<32} {t.weight:>6} {t.trials:>6} {t.errors:>6} {best}")
        lines.append(
            f"{self.trials} trial(s) in {self.seconds:.0f} s; records in {self.work_dir}: "
            f"{self.records_before} before, {self.records_after} now "
            f"(+{self.new_records})"
        )
        return "\n".join(lines)


def tuning_target(target: tvm.target.Target | dict | str | None) -> tvm.target.Target:
    """The target to tune for (and to compile tuned models for): ``num-cores`` is set."""
    if isinstance(target, tvm.target.Target):
        spec = dict(target.export())
    else:
        spec = dict(parse_target(target).export())
    return tvm.target.Target(with_num_cores(spec))


def extract_tasks(
    mod: tvm.IRModule, target: tvm.target.Target | dict | str | None = None
) -> list[ms.ExtractedTask]:
    """The MetaSchedule tasks of what stays with TVM (oneDNN regions excluded)."""
    target = tuning_target(target)
    return ms.relax_integration.extract_tasks(lower_for_tvm(mod, target), target)


@contextlib.contextmanager
def _quiet_metaschedule(verbose: bool):
    """MetaSchedule logs to ``work_dir/logs``; its console echo only when ``verbose``."""
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = ms_logger.level
    # create_loggers() sizes its console handler by this logger's level.
    ms_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    # create_loggers() re-lists this logger's handlers by name and crashes on an unnamed one
    # (e.g. a log-capturing handler someone attached): set those aside for the run.
    unnamed = [h for h in ms_logger.handlers if h.get_name() is None]
    for handler in unnamed:
        ms_logger.removeHandler(handler)
    try:
        yield
    finally:
        ms_logger.setLevel(level)
        for handler in unnamed:
            ms_logger.addHandler(handler)
        # Close the log files of this run (the next run configures its own work_dir's).
        names = [n for n in logging.root.manager.loggerDict if n.startswith(ms_logger.name)]
        for name in names:
            for handler in list(logging.getLogger(name).handlers):
                if isinstance(handler, logging.FileHandler):
                    handler.close()


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target | dict | str | None = None,
    work_dir: str | os.PathLike | None = None,
    max_trials: int = 64,
    *,
    max_trials_per_task: int | None = None,
    num_trials_per_iter: int = 8,
    seed: int | None = None,
    progress: ProgressFn | None = None,
    verbose: bool = False,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    rpc_timeout: float = RUN_TIMEOUT_S,
) -> TuneReport:
    """Tune what stays with TVM after the oneDNN offload; records go to ``work_dir``.

    Args:
        mod: the float (or int8 QDQ) Relax model, static shapes.
        target: a Target, its JSON dict or text; default this CPU. ``num-cores`` (the
            threads the kernels are tuned for and measured with) defaults to the cores
            this process may use (``TVM_ONEDNN_NUM_THREADS`` overrides).
        work_dir: where MetaSchedule's JSON database and logs go. Earlier records there
            are kept; the report says how many there were.
        max_trials: trials (candidate schedules measured) over all tasks.
        max_trials_per_task: cap per task (default ``max_trials``).
        num_trials_per_iter: candidates per search iteration.
        seed: random seed of the search.
        progress: called after each measured batch with a :class:`TuneProgress`.
        verbose: echo MetaSchedule's own log to the console.
        rpc_tracker: ``"host:port"`` of a TVM RPC tracker: candidates are built here and
            measured on the servers registered under ``rpc_key`` (MetaSchedule's
            ``RPCRunner``). The target must describe the remote CPU (``mcpu``,
            ``num-cores``). Checked before anything else: a bad address raises
            ``ValueError``, a tracker that does not answer or has no server under the key
            raises :class:`~tvm_onednn.tuning.rpc.RPCTrackerError` (a ``ValueError``).
            Default: measure locally.
        rpc_key: the servers' ``--key``; required with ``rpc_tracker``.
        rpc_timeout: seconds one remote measurement (session) may take.

    Returns a :class:`TuneReport`; with no TVM tasks (everything runs in oneDNN or needs
    no tuning) nothing is tuned and the report has no tasks.
    """
    if work_dir is None:
        raise ValueError("tune() needs a work_dir for its tuning records")
    if max_trials < 1 or num_trials_per_iter < 1:
        raise ValueError(
            f"max_trials and num_trials_per_iter must be >= 1, got {max_trials}, "
            f"{num_trials_per_iter}"
        )
    if rpc_key is not None and rpc_tracker is None:
        raise ValueError("rpc_key needs rpc_tracker (the tracker's HOST:PORT)")
    if rpc_timeout <= 0:
        raise ValueError(f"rpc_timeout must be > 0 seconds, got {rpc_timeout}")
    start = time.perf_counter()
    # Ask the tracker first: it fails in seconds, before the (slow) task extraction.
    tracker = check_tracker(rpc_tracker, rpc_key or "") if rpc_tracker is not None else None
    if tracker is not None:
        logger.info("tune: %s", tracker)
    work_dir = os.path.abspath(os.fspath(work_dir))
    target = tuning_target(target)
    extracted = extract_tasks(mod, target)
    report = TuneReport(work_dir, str(target), records_before=count_records(work_dir))
    if tracker is not None:
        report.measured_on = str(tracker)
    logger.info("tune: %d task(s) stay with TVM", len(extracted))
    if not extracted:
        # An empty database, so that building with tuning_records=[work_dir] still works.
        open_database(work_dir, create=True)
        report.records_after = report.records_before
        report.seconds = time.perf_counter() - start
        return report

    workers.import_cpu_tensor_intrinsics(target)
    os.makedirs(work_dir, exist_ok=True)
    with _quiet_metaschedule(verbose):
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted,
            work_dir,
            strategy=ms.search_strategy.EvolutionarySearch(
                population_size=population_size(max_trials)
            ),
            seed=seed,
        )
        report.tasks = [TaskStats(ctx.task_name, int(w)) for ctx, w in zip(contexts, weights)]
        callback = ProgressCallback(report.tasks, max_trials, progress)
        database = open_database(work_dir, create=True)
        builder = workers.PooledBuilder(timeout_sec=BUILD_TIMEOUT_S)
        num_cores = int(target.attrs["num-cores"])
        if tracker is None:
            runner = ms.runner.LocalRunner(
                timeout_sec=RUN_TIMEOUT_S, initializer=workers.thread_pool_initializer(num_cores)
            )
        else:
            runner = rpc_runner(tracker, num_cores, rpc_timeout)
        try:
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=work_dir,
                max_trials_global=max_trials,
                max_trials_per_task=max_trials_per_task,
                num_trials_per_iter=num_trials_per_iter,
                builder=builder,
                runner=runner,
                database=database,
                cost_model=ms.cost_model.XGBModel(
                    extractor=ms.feature_extractor.PerStoreFeature(),
                    adaptive_training=True,
                    num_tuning_cores=num_cores,
                ),
                measure_callbacks=ms.measure_callback.MeasureCallback.create("default")
                + [callback],
                task_scheduler="gradient",
            )
        finally:
            builder.shutdown()
            runner.pool.shutdown()
    report.trials = callback.trials
    report.records_after = count_records(work_dir)
    report.seconds = time.perf_counter() - start
    return report
