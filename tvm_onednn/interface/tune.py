"""``tvm-onednn tune``: MetaSchedule tuning of an ONNX model's TVM remainder."""

from __future__ import annotations

import os

from ..tuning import TuneReport, tune
from ..tuning.progress import ProgressFn
from .io import InputError, import_model, load_onnx, model_inputs, require_static


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
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    rpc_timeout: float | None = None,
) -> TuneReport:
    """Import ``model`` and :func:`tvm_onednn.tune` it into ``work_dir``.

    Kernels are tuned at static shapes: a dim the model leaves free must be fixed by
    ``input_shapes`` (an :class:`InputError` says so).

    With ``rpc_tracker`` (``HOST:PORT``) and ``rpc_key``, candidates are measured on the
    tracker's servers; the tracker is asked before the model is imported.
    """
    if trials < 1:
        raise InputError(f"--trials must be >= 1, got {trials}")
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise InputError(f"work directory {os.fspath(work_dir)!r} is a file")
    if (rpc_tracker is None) != (rpc_key is None):
        raise InputError("--rpc-tracker and --rpc-key go together")
    if rpc_timeout is not None and rpc_timeout <= 0:
        raise InputError(f"--rpc-timeout must be > 0 seconds, got {rpc_timeout}")
    from ..target import parse_target
    from ..tuning.rpc import check_tracker

    if rpc_tracker is not None:
        check_tracker(rpc_tracker, rpc_key)  # fails in seconds, before the import

    tvm_target = parse_target(target)  # errors before the (slow) import
    require_static(model_inputs(load_onnx(model), input_shapes), "tuning")
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
        rpc_tracker=rpc_tracker,
        rpc_key=rpc_key,
        **({} if rpc_timeout is None else {"rpc_timeout": rpc_timeout}),
    )
