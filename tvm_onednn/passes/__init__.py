"""Graph rewrites that prepare a Relax module for the oneDNN pattern table."""

from .canonicalize_clip import CanonicalizeClip
from .canonicalize_gelu import CanonicalizeGelu
from .fold_batchnorm import FoldBatchNormIntoConv

__all__ = ["CanonicalizeClip", "CanonicalizeGelu", "FoldBatchNormIntoConv"]
