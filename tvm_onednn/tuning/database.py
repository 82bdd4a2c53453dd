"""Tuning records on disk: MetaSchedule's JSON databases, one per work directory.

A work directory holds ``database_workload.json`` and ``database_tuning_record.json``
(MetaSchedule's ``JSONDatabase`` format, appended to by every tuning run) and ``logs/``.
Several work directories (tuned on different machines or days) are merged with
MetaSchedule's ``UnionDatabase``, which answers each query with the best record of any of
them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tvm.s_tir import meta_schedule as ms

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


class TuningRecordsError(ValueError):
    """A work directory given as tuning records holds none."""


def has_records(work_dir: str | os.PathLike) -> bool:
    """Whether ``work_dir`` holds a MetaSchedule JSON database."""
    work_dir = Path(work_dir)
    return (work_dir / WORKLOADS).is_file() and (work_dir / RECORDS).is_file()


def count_records(work_dir: str | os.PathLike) -> int:
    """Number of tuning records in ``work_dir`` (0 when there is no database yet).

    Counts lines (one JSON record per line) without loading or creating anything.
    """
    path = Path(work_dir) / RECORDS
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def open_database(work_dir: str | os.PathLike, create: bool = False) -> ms.Database:
    """The ``JSONDatabase`` of one work directory.

    Raises ``TuningRecordsError`` when it has none and ``create`` is false.
    """
    work_dir = os.fspath(work_dir)
    if not create and not has_records(work_dir):
        if not os.path.isdir(work_dir):
            raise TuningRecordsError(f"no tuning work directory at {work_dir!r}")
        raise TuningRecordsError(
            f"{work_dir!r} holds no tuning records ({WORKLOADS} and {RECORDS}); "
            "create them with `tvm-onednn tune` / tvm_onednn.tune"
        )
    if create:
        os.makedirs(work_dir, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=work_dir, allow_missing=create)


def merge_databases(work_dirs: Iterable[str | os.PathLike]) -> ms.Database | None:
    """One database answering from all ``work_dirs`` with the best record per workload.

    ``None`` for no directories; the single database for one; otherwise a
    ``UnionDatabase`` of them.
    """
    databases = [open_database(w) for w in work_dirs]
    if not databases:
        return None
    if len(databases) == 1:
        return databases[0]
    return ms.database.UnionDatabase(*databases)
