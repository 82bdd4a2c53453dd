"""Bring-your-own-codegen for oneDNN: pattern table, partitioning, codegen, summary."""

from . import codegen  # registers relax.ext.onednn
from .partition import partition_for_onednn, prepare_for_onednn
from .patterns import composite_names, pattern_table, register
from .summary import OffloadSummary, offload_summary

__all__ = [
    "OffloadSummary",
    "composite_names",
    "offload_summary",
    "partition_for_onednn",
    "pattern_table",
    "prepare_for_onednn",
    "register",
]
