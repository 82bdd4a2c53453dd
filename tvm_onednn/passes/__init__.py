"""Graph rewrites that prepare a Relax module for the oneDNN pattern table."""

from .canonicalize_clip import CanonicalizeClip
from .canonicalize_gelu import CanonicalizeGelu
from .canonicalize_gelu_tanh import CanonicalizeGeluTanh
from .ensure_host_function import HOST_FUNCTION, EnsureHostFunction
from .fold_batchnorm import FoldBatchNormIntoConv
from .fold_constant_calls import FoldConstantCalls
from .fold_constants_numpy import FoldConstantsWithNumpy
from .fold_matmul_scale import FoldMatmulScale
from .isolate_extern_tuple_items import IsolateExternTupleItems
from .rewrite_stack_sum import RewriteStackSum
from .well_formed import IllFormedModuleError, WellFormedCheck

__all__ = [
    "CanonicalizeClip",
    "CanonicalizeGelu",
    "CanonicalizeGeluTanh",
    "EnsureHostFunction",
    "FoldBatchNormIntoConv",
    "FoldConstantCalls",
    "FoldConstantsWithNumpy",
    "FoldMatmulScale",
    "HOST_FUNCTION",
    "IllFormedModuleError",
    "IsolateExternTupleItems",
    "RewriteStackSum",
    "WellFormedCheck",
]
