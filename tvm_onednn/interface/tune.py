"""``tvm-onednn tune``: MetaSchedule tuning of an ONNX model's TVM remainder."""

from __future__ import annotations

import os

from ..tuning import TuneReport, tune
from ..tuning.progress import ProgressFn
from .io import InputError, import_model


def tune_onnx(
    model: str | os.PathLike,
    work_dir: str | os.PathLike,
    trials: int,
    *,
    input_shapes: dict[str, list[int]] | None = None,
    target: str | dict | None = None,
    max_trials_per_task: int | None = None,
    num_trials_per_iter: int = 8,
    seed: int | None = None,
    progress: ProgressFn | None = None,
) -> TuneReport:
    """Import ``model`` and :func:`tvm_onednn.tune` it into ``work_dir``."""
    if trials < 1:
        raise InputError(f"--trials must be >= 1, got {trials}")
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise InputError(f"work directory {os.fspath(work_dir)!r} is a file")
    from ..target import parse_target

    tvm_target = parse_target(target)  # errors before the (slow) import
    mod, _ = import_model(model, input_shapes)
    return tune(
        mod,
        tvm_target,
        work_dir,
        trials,
        max_trials_per_task=max_trials_per_task,
        num_trials_per_iter=num_trials_per_iter,
        seed=seed,
        progress=progress,
    )
