"""``tvm-onednn compile``: ONNX -> exported ``.so`` (optionally int8, optionally tuned)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tvm

from ..byoc.partition import partition_for_onednn
from ..byoc.summary import OffloadSummary, summarize_partitioned
from ..pipeline import lower_for_tvm
from ..target import parse_target
from ..tuning import compile_model, tuned_kernels, tuning_target
from .io import (
    InputError,
    TensorSpec,
    calibration_batches,
    import_model,
    load_calibration_samples,
)
from .metadata import make_metadata, with_metadata

CALIB_MODES = ("naive", "entropy", "percentile", "none")


class QuantizeUnavailableError(InputError):
    """``--quantize`` was asked for but ``tvm_onednn.quantize`` cannot be imported."""


@dataclass
class QuantizeOptions:
    """What ``--quantize int8`` and the calibration flags ask for."""

    calib_data: str | None = None  # .npz or a directory of .npy/.npz
    calib_mode: str = "naive"
    num_calib_batches: int | None = None
    exclude_layers: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.calib_mode not in CALIB_MODES:
            raise InputError(f"unknown calibration mode {self.calib_mode!r}; one of {CALIB_MODES}")
        if self.calib_mode != "none" and not self.calib_data:
            raise InputError(
                f"int8 quantization with calibration mode {self.calib_mode!r} needs "
                "calibration data (--calib-data FILE.npz|DIR), or use --calib-mode none"
            )
        if self.num_calib_batches is not None and self.num_calib_batches < 1:
            raise InputError(f"--num-calib-batches must be >= 1, got {self.num_calib_batches}")


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

    def __str__(self) -> str:
        shapes = ", ".join(f"{s.name}:{list(s.shape)} {s.dtype}" for s in self.inputs)
        lines = [
            (
                f"compiled {'int8' if self.quantized else 'float32'} model for {self.target} "
                f"in {self.seconds:.1f} s"
            ),
            f"inputs: {shapes}",
        ]
        if self.tuning_records:
            lines.append(
                f"tuning records from {', '.join(self.tuning_records)}: applied to "
                f"{len(self.tuned)} of {len(self.tuned) + len(self.untuned)} TVM kernel(s)"
                + (f" (untuned: {', '.join(self.untuned)})" if self.untuned else "")
            )
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


def quantize_model(mod: tvm.IRModule, specs: Sequence[TensorSpec], options: QuantizeOptions):
    """Calibrate and quantize ``mod`` to int8 with the data the options point at."""
    quantize = quantize_function()
    batches = None
    if options.calib_mode != "none":
        samples = load_calibration_samples(options.calib_data, specs)
        batches = calibration_batches(samples, specs)
    return quantize(
        mod,
        batches,
        calib_mode=options.calib_mode,
        num_calib_batches=options.num_calib_batches,
        exclude_layers=list(options.exclude_layers) or None,
    )


def _dump(dump_dir: Path | None, name: str, text: str) -> None:
    if dump_dir is not None:
        (dump_dir / name).write_text(text)


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

    ``dump_ir`` writes the IR after each phase (imported, quantized, partitioned, lowered
    for TVM) and the offload summary to that directory.
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
    dump_dir = Path(dump_ir) if dump_ir is not None else None
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)

    mod, specs = import_model(model_path, input_shapes)
    _dump(dump_dir, "00_imported.py", mod.script())
    if quantize is not None:
        mod = quantize_model(mod, specs, quantize)
        _dump(dump_dir, "01_quantized.py", mod.script())
    partitioned = partition_for_onednn(mod)
    summary = summarize_partitioned(partitioned)
    if dump_dir is not None:
        _dump(dump_dir, "02_partitioned.py", partitioned.script())
        lowered_target = tuning_target(tvm_target) if records else tvm_target
        _dump(dump_dir, "03_lowered_for_tvm.py", lower_for_tvm(mod, lowered_target).script())
        _dump(dump_dir, "summary.txt", str(summary) + "\n")

    tuned: tuple[list[str], list[str]] = ([], [])
    if records:
        tuned = tuned_kernels(mod, tvm_target, records)
    metadata = make_metadata(specs, quantized=quantize is not None, target=str(tvm_target))
    executable = compile_model(with_metadata(mod, metadata), tvm_target, records)
    executable.export_library(output)
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
    )
