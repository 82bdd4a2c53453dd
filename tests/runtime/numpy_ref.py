"""Small numpy references for the runtime tests (NCHW / OIHW, float64 accumulation)."""

from __future__ import annotations

import math

import numpy as np


def conv2d(x, w, bias=None, strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """x [N,C,H,W], w [O,C/groups,KH,KW], padding [top,left,bottom,right]."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    assert c == cg * groups and o % groups == 0
    pt, pl, pb, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    sh, sw = strides
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                           j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def pool_out_size(size, k, s, pad_l, pad_r, d, ceil_mode):
    span = d * (k - 1) + 1
    num = size + pad_l + pad_r - span + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + pad_l:
        out -= 1
    return out


def pool2d(x, kind, pool_size, strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
           ceil_mode=False, count_include_pad=False):
    """TVM / PyTorch semantics: avg divisor counts taps inside [-pad_l, size + pad_r) when
    count_include_pad, else taps inside the input."""
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    kh, kw = pool_size
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding
    oh = pool_out_size(h, kh, sh, pt, pb, dh, ceil_mode)
    ow = pool_out_size(w, kw, sw, pl, pr, dw, ceil_mode)
    out = np.zeros((n, c, oh, ow))
    for a in range(oh):
        for b in range(ow):
            vals, pad_taps = [], 0
            for i in range(kh):
                for j in range(kw):
                    y = a * sh - pt + i * dh
                    z = b * sw - pl + j * dw
                    inside = 0 <= y < h and 0 <= z < w
                    if inside:
                        vals.append(x[:, :, y, z])
                    elif -pt <= y < h + pb and -pl <= z < w + pr:
                        pad_taps += 1
            if kind == "max":
                out[:, :, a, b] = np.max(vals, axis=0)
            else:
                total = np.sum(vals, axis=0)
                div = len(vals) + (pad_taps if count_include_pad else 0)
                out[:, :, a, b] = total / div
    return out


def global_avg_pool2d(x):
    return x.astype(np.float64).mean(axis=(2, 3), keepdims=True)


_erf = np.vectorize(math.erf)


def activation(x, act, clip_min=0.0, clip_max=6.0, alpha=0.1):
    x = np.asarray(x, dtype=np.float64)
    if act in (None, "", "none"):
        return x
    if act == "relu":
        return np.maximum(x, 0)
    if act == "clip":
        return np.clip(x, clip_min, clip_max)
    if act == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if act == "tanh":
        return np.tanh(x)
    if act == "gelu":
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if act == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if act == "silu":
        return x / (1 + np.exp(-x))
    if act == "hardswish":
        return x * np.clip(x + 3, 0, 6) / 6
    if act == "leaky_relu":
        return np.where(x >= 0, x, alpha * x)
    raise ValueError(act)
