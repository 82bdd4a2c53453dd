"""s8 weight encoding, and the one oneDNN's int8 kernels compute exactly on this CPU.

Weights are symmetric s8, one scale per output channel (or per tensor):
``w ~= scale * w_q``, zero point 0.

On CPUs with an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX-INT8) oneDNN
accumulates u8/s8 x s8 products in s32, so full 8-bit weights (``|w_q| <= 127``) are exact.
Without one (AVX2 only), oneDNN multiplies byte pairs with ``vpmaddubsw``, whose 16-bit
pair sums saturate for large u8 x s8 products, and for s8 activations it shifts the source
to u8 and *halves the weights* (``scale_adjust = 0.5``, oneDNN's "Nuances of int8
computations"), rounding odd values. Both make the int8 result differ from the QDQ graph.
So on such CPUs weights get 7-bit precision, encoded so that oneDNN's arithmetic is exact:

* u8 activations: ``|w_q| <= 63`` (pair sums stay below 2**15);
* s8 activations: even ``w_q`` with ``|w_q| <= 126`` (halving is exact and gives 7 bits).

Measured on an AVX2 machine: 8-bit weights gave 1-2 % output errors against the QDQ
graph; with this encoding oneDNN's result equals it to float rounding.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..calib import weight_scales

__all__ = ["WeightEncoding", "has_int8_dot_product", "quantize_weight", "weight_encoding"]

logger = logging.getLogger(__name__)

Granularity = Literal["channel-wise", "tensor-wise"]
GRANULARITIES = ("channel-wise", "tensor-wise")
_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class WeightEncoding:
    """``w_q = step * clip(round(w / (step * scale)), -levels, levels)``; scale per channel."""

    levels: int  # 127: 8-bit, 63: 7-bit
    step: int = 1  # 2: even values only


FULL_8BIT = WeightEncoding(127)


@functools.cache
def has_int8_dot_product() -> bool:
    """Whether this CPU has VNNI or AMX int8 dot products (Linux ``/proc/cpuinfo``).

    When the flags cannot be read, the answer is False: the 7-bit encoding is exact
    everywhere, 8-bit only with a dot-product instruction.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return any(flag in flags for flag in _DOT_PRODUCT_FLAGS)


def weight_encoding(src_dtype: str) -> WeightEncoding:
    """The encoding oneDNN computes exactly for a chain reading ``src_dtype`` activations."""
    if has_int8_dot_product():
        return FULL_8BIT
    return WeightEncoding(63, 2) if src_dtype == "int8" else WeightEncoding(63)


def quantize_weight(
    weight: np.ndarray,
    axis: int,
    granularity: Granularity = "channel-wise",
    encoding: WeightEncoding = FULL_8BIT,
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric s8 weights: ``(w_q, scales)`` with ``w ~= scales * w_q`` along ``axis``.

    ``scales`` has one float32 per slice of ``axis`` (channel-wise) or is a 0-d array
    (tensor-wise). Values are rounded to nearest; see :class:`WeightEncoding`.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"quantize_granularity must be one of {GRANULARITIES}")
    if granularity == "channel-wise":
        scales = weight_scales(weight, axis=axis)  # max|w| / 127 (1.0 for all-zero channels)
        shape = [1] * weight.ndim
        shape[axis] = -1
    else:
        scales = weight_scales(weight.reshape(1, -1), axis=0).reshape(())
        shape = []
    if encoding.levels != 127:
        scales = scales * np.float32(127 / encoding.levels)  # the scale of one level
    levels = np.clip(np.round(weight / scales.reshape(shape)), -encoding.levels, encoding.levels)
    w_q = (levels * encoding.step).astype(np.int8)
    return w_q, (scales / np.float32(encoding.step)).astype(np.float32)
