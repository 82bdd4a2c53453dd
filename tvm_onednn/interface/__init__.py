"""What the command line does, as library functions (``cli/`` only parses arguments).

- :func:`compile_onnx` -- ONNX -> exported ``.so`` (optional int8, tuning records); dims
  the model leaves free (a dynamic batch) stay free and are recorded in the library;
- :func:`run_library` -- run an exported ``.so`` on an ``.npz`` (any shape it takes),
  top-k, profile;
- :func:`benchmark` (:mod:`.benchmarking`) -- per batch: medians, items/s, the first call
  at a new shape, ratios vs ONNX Runtime, optional bar chart;
- :func:`inspect_model` -- the offload summary;
- :func:`tune_onnx` -- MetaSchedule tuning of what stays with TVM (static shapes).

Bad input raises :class:`InputError` (a ``ValueError``) with one clear sentence.
"""

from .benchmarking import BenchmarkReport, benchmark
from .compile import CompileResult, QuantizeOptions, QuantizeUnavailableError, compile_onnx
from .inspect import Inspection, inspect_model
from .io import InputError, TensorSpec, parse_input_shapes
from .run import RunResult, load_library, run_library
from .tune import tune_onnx

__all__ = [
    "BenchmarkReport",
    "CompileResult",
    "InputError",
    "Inspection",
    "QuantizeOptions",
    "QuantizeUnavailableError",
    "RunResult",
    "TensorSpec",
    "benchmark",
    "compile_onnx",
    "inspect_model",
    "load_library",
    "parse_input_shapes",
    "run_library",
    "tune_onnx",
]
