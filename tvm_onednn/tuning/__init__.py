"""MetaSchedule autotuning of what stays with TVM, and compiling with the records.

- :func:`tune` partitions first (oneDNN regions are not tuned) and tunes the TVM
  remainder; records go to a work directory (MetaSchedule's JSON database).
- :func:`compile_model` builds with the ``"onednn"`` pipeline and the records of one or
  several work directories in scope (best record per workload across them).
"""

from .compile import compile_model, scheduled_kernels, tuned_kernels
from .database import TuningRecordsError, count_records, merge_databases, open_database
from .progress import TaskStats, TuneProgress
from .rpc import RPCTrackerError, TrackerStatus, check_tracker
from .tune import TuneReport, extract_tasks, tune, tuning_target

__all__ = [
    "RPCTrackerError",
    "TaskStats",
    "TrackerStatus",
    "TuneProgress",
    "TuneReport",
    "TuningRecordsError",
    "check_tracker",
    "compile_model",
    "count_records",
    "extract_tasks",
    "merge_databases",
    "open_database",
    "tune",
    "scheduled_kernels",
    "tuned_kernels",
    "tuning_target",
]
