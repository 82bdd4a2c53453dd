"""tvm-onednn: run Apache TVM Relax models on Intel CPUs with oneDNN kernels.

``import tvm_onednn`` loads the C++ runtime (so exported modules load), registers
``relax.ext.onednn`` and the ``"onednn"`` pipeline for
``tvm.compile(mod, target, relax_pipeline="onednn")``.
"""

from .threads import set_thread_defaults as _set_thread_defaults

_set_thread_defaults()  # before libgomp loads with the runtime library

from . import _ffi_api, pipeline  # load the runtime; register the "onednn" pipeline
from .byoc import OffloadSummary, offload_summary, partition_for_onednn
from .frontend import ModelImportError, from_onnx
from .plan_cache import get_plan_cache_size, set_plan_cache_size
from .quantize import quantize  # int8: the counterpart of MXNet's quantize_net
from .threads import get_num_threads, set_num_threads
from .tuning import TuneReport, compile_model, tune

__version__ = "0.1.0"

__all__ = [
    "ModelImportError",
    "OffloadSummary",
    "TuneReport",
    "compile_model",
    "from_onnx",
    "get_num_threads",
    "get_plan_cache_size",
    "offload_summary",
    "partition_for_onednn",
    "quantize",
    "set_num_threads",
    "set_plan_cache_size",
    "tune",
]
