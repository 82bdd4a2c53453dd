"""``tvm-onednn compile``: ONNX -> exported ``.so`` (optionally int8, optionally tuned)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tvm

from ..byoc.summary import OffloadSummary, summarize_partitioned
from ..pipeline import PipelineTrace
from ..target import parse_target
from ..tuning import compile_model, scheduled_kernels
from .io import (
    InputError,
    TensorSpec,
    calibration_batches,
    format_shape,
    import_model,
    load_calibration_samples,
    symbolic_dims,
)
from ..frontend import is_static_dim
from .metadata import make_metadata, with_metadata

if TYPE_CHECKING:
    from ..quantize.report import QuantizeReport


class QuantizeUnavailableError(InputError):
    """``--quantize`` was asked for but ``tvm_onednn.quantize`` cannot be imported."""


def calib_modes() -> list[str]:
    """Calibration modes a command line can ask for: ``auto``, the registered collectors
    (:data:`tvm_onednn.calib.COLLECTORS`, one source of truth) and ``none``."""
    from ..calib.registry import COLLECTORS

    return ["auto", *COLLECTORS, "none"]


@dataclass
class QuantizeOptions:
    """What ``--quantize int8`` and the calibration flags ask for."""

    calib_data: str | None = None  # .npz or a directory of .npy/.npz
    calib_mode: str = "auto"
    num_calib_batches: int | None = None
    exclude_layers: Sequence[str] = ()
    validation_data: str | None = None  # accuracy control: .npz or a directory, as calib_data
    max_drop: float | None = None  # its top-1 agreement budget (default 0.01)
    bias_correction: bool = True  # see tvm_onednn.quantize
    float_stem: bool = True
    float_matmul_math: str = "bf16"  # "bf16" or "f32", see tvm_onednn.quantize

    def __post_init__(self) -> None:
        modes = calib_modes()
        if self.calib_mode not in modes:
            raise InputError(f"unknown calibration mode {self.calib_mode!r}; one of {modes}")
        if self.calib_mode not in ("none", "auto") and not self.calib_data:
            raise InputError(
                f"int8 quantization with calibration mode {self.calib_mode!r} needs "
                "calibration data (--calib-data FILE.npz|DIR), or use --calib-mode none"
            )
        if self.num_calib_batches is not None and self.num_calib_batches < 1:
            raise InputError(f"--num-calib-batches must be >= 1, got {self.num_calib_batches}")
        if self.max_drop is not None and not self.validation_data:
            raise InputError("--max-drop needs --validation-data FILE.npz|DIR")
        if self.max_drop is not None and not 0 <= self.max_drop < float("inf"):
            raise InputError(f"--max-drop must be a number >= 0, got {self.max_drop}")
        if self.validation_data and self.calib_mode == "none":
            raise InputError("--validation-data needs calibration (not --calib-mode none)")


@dataclass
class CompileResult:
    """What ``compile`` produced."""

    output: str
    inputs: list[TensorSpec]
    summary: OffloadSummary
    target: str
    quantized: bool
    tuning_records: list[str] = field(default_factory=list)
    tuned: list[str] = field(default_factory=list)  # TVM kernels that got a tuning record
    untuned: list[str] = field(default_factory=list)
    seconds: float = 0.0
    quantize_report: QuantizeReport | None = None  # what --quantize int8 did

    def __str__(self) -> str:
        shapes = ", ".join(f"{s.name}:{format_shape(s.shape)} {s.dtype}" for s in self.inputs)
        free = symbolic_dims(self.inputs)
        lines = [
            (
                f"compiled {'int8' if self.quantized else 'float32'} model for {self.target} "
                f"in {self.seconds:.1f} s"
            ),
            f"inputs: {shapes}"
            + (f" ({', '.join(free)}: any size)" if free else ""),
        ]
        if self.tuning_records:
            lines.append(
                f"tuning records from {', '.join(self.tuning_records)}: applied to "
                f"{len(self.tuned)} of {len(self.tuned) + len(self.untuned)} TVM kernel(s)"
                + (f" (untuned: {', '.join(self.untuned)})" if self.untuned else "")
            )
        if self.quantize_report is not None:
            lines.append(self.quantize_report.summary())
        lines += [str(self.summary), f"wrote {self.output}"]
        return "\n".join(lines)


def quantize_function():
    """``tvm_onednn.quantize.quantize``, or a clear error when it is not available."""
    try:
        from ..quantize import quantize
    except ImportError as err:
        raise QuantizeUnavailableError(
            f"int8 quantization is not available in this installation ({err})"
        ) from None
    return quantize


def quantize_model(
    mod: tvm.IRModule, specs: Sequence[TensorSpec], options: QuantizeOptions
) -> tuple[tvm.IRModule, QuantizeReport]:
    """Calibrate and quantize ``mod`` to int8 with the data the options point at; the int8
    module and the quantizer's report."""
    quantize = quantize_function()
    batches = None
    if options.calib_mode != "none" and options.calib_data:
        samples = load_calibration_samples(options.calib_data, specs)
        batches = calibration_batches(samples, specs)
    validation = None
    if options.validation_data:
        from ..quantize import top1_agreement

        validation = (validation_batches(options.validation_data, specs), top1_agreement)
    from ..quantize import CalibrationDataRequired

    try:
        return quantize(
            mod,
            batches,
            calib_mode=options.calib_mode,
            num_calib_batches=options.num_calib_batches,
            exclude_layers=list(options.exclude_layers) or None,
            validation=validation,
            max_drop=options.max_drop,
            bias_correction=options.bias_correction,
            float_stem=options.float_stem,
            float_matmul_math=options.float_matmul_math,
            return_report=True,
        )
    except CalibrationDataRequired as e:
        raise InputError(
            f"int8 quantization of this model needs calibration data (--calib-mode auto chose "
            f"{e.chosen}: it has conv layers or accuracy control): give --calib-data "
            "FILE.npz|DIR, or use --calib-mode none"
        ) from None


def validation_batches(path: str, specs: Sequence[TensorSpec]) -> list[dict]:
    """``--validation-data`` samples in batches the model runs as is (full batches only)."""
    batches = calibration_batches(load_calibration_samples(path, specs), specs)
    lead = specs[0].shape[0] if specs[0].shape else None
    if is_static_dim(lead) and len(next(iter(batches[-1].values()))) != int(lead):
        total = sum(len(next(iter(b.values()))) for b in batches)
        raise InputError(
            f"--validation-data {path!r}: {total} samples are not a multiple of the model's "
            f"batch size {int(lead)}"
        )
    return batches


def compile_onnx(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    input_shapes: dict[str, list[int]] | None = None,
    target: str | dict | None = None,
    quantize: QuantizeOptions | None = None,
    tuning_records: Sequence[str | os.PathLike] = (),
    dump_ir: str | os.PathLike | None = None,
) -> CompileResult:
    """Import, optionally quantize, compile with the oneDNN pipeline, export a ``.so``.

    Dims the model leaves free (a dynamic batch axis) stay free in the library unless
    ``input_shapes`` fixes them; the library's metadata records them by name.

    ``dump_ir`` writes the IR after each phase (imported, quantized, then each phase of the
    ``"onednn"`` pipeline, see :class:`tvm_onednn.pipeline.PipelineTrace`) and the offload
    summary to that directory. The model is partitioned once: the summary is read from the
    pipeline's own partitioned module.
    """
    start = time.perf_counter()
    output = os.fspath(output)
    if not output.endswith((".so", ".tar", ".dylib")):
        raise InputError(f"output {output!r} must end with .so (a shared library) or .tar")
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise InputError(f"output directory {out_dir!r} does not exist")
    tvm_target = parse_target(target)
    records = [os.fspath(r) for r in tuning_records]
    for r in records:
        if not os.path.isdir(r):
            raise InputError(f"no tuning work directory at {r!r}")
    trace = PipelineTrace(dump_ir)

    mod, specs = import_model(model_path, input_shapes)
    quantize_report = None
    trace("imported", mod)
    if quantize is not None:
        mod, quantize_report = quantize_model(mod, specs, quantize)
        trace("quantized", mod)
        trace.write("quantize_report.txt", f"{quantize_report}\n")  # the full per-layer table

    metadata = make_metadata(specs, quantized=quantize is not None, target=str(tvm_target))
    executable = compile_model(with_metadata(mod, metadata), tvm_target, records, trace=trace)
    executable.export_library(output)
    summary = summarize_partitioned(trace.modules["partitioned"])
    trace.write("summary.txt", str(summary) + "\n")
    tuned = scheduled_kernels(trace.modules["tuned"]) if records else ([], [])
    return CompileResult(
        output=output,
        inputs=list(specs),
        summary=summary,
        target=str(tvm_target),
        quantized=quantize is not None,
        tuning_records=records,
        tuned=tuned[0],
        untuned=tuned[1],
        seconds=time.perf_counter() - start,
        quantize_report=quantize_report,
    )
