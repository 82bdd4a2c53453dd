"""Following a tuning run: a MetaSchedule measure callback that reports every batch."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms


@dataclass
class TaskStats:
    """What one task's measurements gave in this run."""

    name: str
    weight: int
    trials: int = 0
    errors: int = 0
    best_seconds: float = math.inf

    @property
    def best_us(self) -> float | None:
        return None if math.isinf(self.best_seconds) else self.best_seconds * 1e6


@dataclass
class TuneProgress:
    """The state after a batch of candidates was measured (passed to ``progress``)."""

    trials: int  # candidates measured so far in this run, all tasks
    max_trials: int
    task: TaskStats  # the task this batch belonged to
    tasks: list[TaskStats] = field(repr=False)


ProgressFn = Callable[[TuneProgress], None]


def _seconds(result: ms.runner.RunnerResult) -> float | None:
    if result.error_msg or not result.run_secs:
        return None
    secs = sorted(float(s) for s in result.run_secs)
    return secs[len(secs) // 2]


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Counts trials and errors per task, keeps the best latency, calls ``progress``."""

    def __init__(self, tasks: list[TaskStats], max_trials: int, progress: ProgressFn | None):
        super().__init__()
        self.tasks = tasks
        self.max_trials = max_trials
        self.progress = progress
        self.trials = 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        stats = self.tasks[int(task_id)]
        for built, ran in zip(builder_results, runner_results):
            stats.trials += 1
            self.trials += 1
            seconds = None if built.error_msg else _seconds(ran)
            if seconds is None:
                stats.errors += 1
            else:
                stats.best_seconds = min(stats.best_seconds, seconds)
        if self.progress is not None:
            self.progress(TuneProgress(self.trials, self.max_trials, stats, self.tasks))
