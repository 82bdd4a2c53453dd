"""s8 weight encodings, chosen per layer so that oneDNN's int8 kernels compute them exactly.

Weights are symmetric s8, one scale per output channel (or per tensor):
``w ~= scale * w_q``, zero point 0.

On CPUs with an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX-INT8) oneDNN
accumulates u8/s8 x s8 products in s32, so full 8-bit weights (``|w_q| <= 127``) are exact.
Without one (AVX2 only), oneDNN multiplies byte pairs with ``vpmaddubsw``: neighbours along
the reduction axis (conv input channels 2k and 2k+1, matmul rows 2k and 2k+1) are multiplied
by u8 data (up to 255) and summed in s16, which saturates unless ``|w_a| + |w_b| <= 128``.
For s8-source convolutions oneDNN also *halves the weights* (``scale_adjust = 0.5``,
oneDNN's "Nuances of int8 computations"), rounding odd values. So on such CPUs:

* u8-source convs and all matmuls (gemm shifts s8 data to u8): 8-bit weights whose
  neighbouring pairs sum to at most 128 in magnitude (``PAIR_BOUNDED``); a depthwise conv
  sums over one channel per group, so it has no pairs and keeps all 8 bits;
* s8-source convs: even ``w_q`` with ``|w_q| <= 126`` (halving is exact: 7 bits).

The runtime's saturation guard (``src/int8_attrs.h``) checks the same pair bound and leaves
such weights as they are, so oneDNN's result equals the QDQ graph to float rounding.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..calib import weight_scales

__all__ = [
    "FULL_8BIT",
    "HALVED_EXACT",
    "PAIR_BOUNDED",
    "WeightEncoding",
    "has_int8_dot_product",
    "quantize_weight",
    "weight_encoding",
]

logger = logging.getLogger(__name__)

Granularity = Literal["channel-wise", "tensor-wise"]
GRANULARITIES = ("channel-wise", "tensor-wise")


@dataclass(frozen=True)
class WeightEncoding:
    """``w_q = step * clip(round(w / (step * scale)), -levels, levels)``; scale per channel.

    With ``pair_limit``, the scale is also large enough that neighbouring pairs along the
    reduction axis have ``|w_q[2k]| + |w_q[2k+1]| <= pair_limit``.
    """

    levels: int  # 127: 8-bit, 63: 7-bit
    step: int = 1  # 2: even values only
    pair_limit: int | None = None


FULL_8BIT = WeightEncoding(127)
PAIR_BOUNDED = WeightEncoding(127, pair_limit=128)  # 255 * 128 fits s16
HALVED_EXACT = WeightEncoding(63, 2)


@functools.cache
def has_int8_dot_product() -> bool:
    """Whether the ISA oneDNN runs on has VNNI or AMX int8 dot products.

    Asked of the runtime (``onednn.get_int8_saturation_guard``), so ``ONEDNN_MAX_CPU_ISA``
    and the kernels oneDNN really picks decide, not the CPU's flags.
    """
    from .. import _ffi_api

    return _ffi_api.get_int8_saturation_guard()["vnni"]


def weight_encoding(src_dtype: str, kind: str = "conv2d") -> WeightEncoding:
    """The encoding oneDNN computes exactly for a ``kind`` layer reading ``src_dtype`` data."""
    if has_int8_dot_product():
        return FULL_8BIT
    if kind == "conv2d" and src_dtype == "int8":
        return HALVED_EXACT
    return PAIR_BOUNDED  # a depthwise conv sums over one channel: no pairs, full 8 bits


def quantize_weight(
    weight: np.ndarray,
    axis: int,
    granularity: Granularity = "channel-wise",
    encoding: WeightEncoding = FULL_8BIT,
    reduce_axis: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric s8 weights: ``(w_q, scales)`` with ``w ~= scales * w_q`` along ``axis``.

    ``scales`` has one float32 per slice of ``axis`` (channel-wise) or is a 0-d array
    (tensor-wise). Values are rounded to nearest; see :class:`WeightEncoding`.
    ``reduce_axis`` (the axis the layer sums over) is needed for a ``pair_limit``.
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
    if encoding.pair_limit is not None:
        if reduce_axis is None:
            raise ValueError("a pair-bounded encoding needs the reduction axis")
        per_scale = (axis,) if granularity == "channel-wise" else ()
        others = tuple(d for d in range(weight.ndim) if d not in per_scale)
        pair_max = _pair_sums(np.abs(weight), reduce_axis).max(axis=others).astype(np.float32)
        scales = np.where(pair_max > 0, np.maximum(scales, pair_max / encoding.pair_limit), scales)
    real = weight / scales.reshape(shape)
    levels = np.clip(np.round(real), -encoding.levels, encoding.levels)
    if encoding.pair_limit is not None:
        levels = _bound_pairs(levels, real, reduce_axis, encoding.pair_limit)
    w_q = (levels * encoding.step).astype(np.int8)
    return w_q, (scales / np.float32(encoding.step)).astype(np.float32)


def _pairs(x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` with ``axis`` moved last, zero-padded to even length and split into pairs."""
    x = np.moveaxis(x, axis, -1)
    if x.shape[-1] % 2:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (1,), x.dtype)], axis=-1)
    return x.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))


def _pair_sums(abs_weight: np.ndarray, axis: int) -> np.ndarray:
    """``|w[2k]| + |w[2k+1]|`` along ``axis``, kept at position ``axis`` (half its length)."""
    return np.moveaxis(_pairs(abs_weight, axis).sum(-1), -1, axis)


def _bound_pairs(levels: np.ndarray, real: np.ndarray, axis: int, limit: int) -> np.ndarray:
    """Round down, in each pair over ``limit``, the element that rounding raised most.

    The scale keeps ``|real_a| + |real_b| <= limit``, so rounding overshoots by at most one.
    """
    length = levels.shape[axis]
    q, r = _pairs(levels, axis).copy(), _pairs(real, axis)
    over = np.abs(q).sum(-1) > limit
    if over.any():
        raised = np.abs(q) - np.abs(r)  # how far rounding moved each magnitude up
        pick = np.argmax(raised, axis=-1)[..., None]
        chosen = np.take_along_axis(q, pick, -1)
        np.put_along_axis(q, pick, np.where(over[..., None], chosen - np.sign(chosen), chosen), -1)
    q = q.reshape(q.shape[:-2] + (-1,))[..., :length]
    return np.moveaxis(q, -1, axis)
