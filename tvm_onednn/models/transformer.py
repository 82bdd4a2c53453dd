"""Dense-path models written as ONNX: a BERT-style encoder layer and a small MLP."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx

from .graph_builder import GraphBuilder

__all__ = ["encoder_block_onnx", "mlp_onnx"]

_LN_EPS = 1e-12  # BERT's LayerNorm epsilon


def _linear(
    g: GraphBuilder, x: str, fan_in: int, fan_out: int, prefix: str, out: str | None = None
) -> str:
    """MatMul with a [fan_in, fan_out] weight, then Add bias (nn.Linear's default init)."""
    bound = 1.0 / math.sqrt(fan_in)
    w = g.rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
    b = g.rng.uniform(-bound, bound, fan_out).astype(np.float32)
    y = g.op("MatMul", [x, g.const(f"{prefix}.weight", w)], f"{prefix}.matmul")
    return g.op("Add", [y, g.const(f"{prefix}.bias", b)], out or f"{prefix}.add")


def _layer_norm(g: GraphBuilder, x: str, hidden: int, prefix: str, out: str | None = None) -> str:
    gamma = g.rng.uniform(0.8, 1.2, hidden).astype(np.float32)
    beta = g.rng.normal(0.0, 0.05, hidden).astype(np.float32)
    inputs = [x, g.const(f"{prefix}.weight", gamma), g.const(f"{prefix}.bias", beta)]
    return g.op("LayerNormalization", inputs, out or prefix, axis=-1, epsilon=_LN_EPS)


def _gelu_erf(g: GraphBuilder, x: str, prefix: str) -> str:
    """GELU as exported by PyTorch/HF: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    sqrt2 = g.const(f"{prefix}.sqrt2", np.float32(math.sqrt(2.0)))
    scaled = g.op("Div", [x, sqrt2], f"{prefix}.div")
    erf = g.op("Erf", [scaled], f"{prefix}.erf")
    one_plus = g.op("Add", [erf, g.const(f"{prefix}.one", np.float32(1.0))], f"{prefix}.add")
    y = g.op("Mul", [x, one_plus], f"{prefix}.mul")
    return g.op("Mul", [y, g.const(f"{prefix}.half", np.float32(0.5))], f"{prefix}.mul_half")


def encoder_block_onnx(
    batch: int = 1,
    seq: int = 128,
    hidden: int = 256,
    heads: int = 4,
    ffn: int = 1024,
    seed: int = 0,
    log_softmax_head: bool = False,
) -> onnx.ModelProto:
    """One post-LN BERT encoder layer (no attention mask) as an opset-17 ONNX model.

    ``log_softmax_head`` appends a LogSoftmax over the hidden axis (a language-model-style
    head): oneDNN has no pattern for it, so it stays with TVM, e.g. as a tuning task.

    Input ``data`` and output ``output`` are ``[batch, seq, hidden]``. Graph:
    Q/K/V MatMul+Add -> Reshape/Transpose to heads -> MatMul(Q, K^T) -> Div sqrt(d) ->
    Softmax -> MatMul V -> Transpose/Reshape -> out-proj MatMul+Add -> residual Add ->
    LayerNormalization -> FFN MatMul+Add -> GELU(Erf) -> MatMul+Add -> residual Add ->
    LayerNormalization.
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    head_dim = hidden // heads
    g = GraphBuilder(seed)
    x = "data"
    split_shape = g.const("heads_shape", np.array([batch, seq, heads, head_dim], np.int64))
    merge_shape = g.const("hidden_shape", np.array([batch, seq, hidden], np.int64))

    def to_heads(name: str, perm: list[int]) -> str:
        proj = _linear(g, x, hidden, hidden, f"attention.self.{name}")
        split = g.op("Reshape", [proj, split_shape], f"attention.self.{name}.reshape")
        return g.op("Transpose", [split], f"attention.self.{name}.transpose", perm=perm)

    q = to_heads("query", [0, 2, 1, 3])  # [b, h, s, d]
    k_t = to_heads("key", [0, 2, 3, 1])  # [b, h, d, s]
    v = to_heads("value", [0, 2, 1, 3])  # [b, h, s, d]
    scores = g.op("MatMul", [q, k_t], "attention.scores")
    scale = g.const("attention.scale", np.float32(math.sqrt(head_dim)))
    scores = g.op("Div", [scores, scale], "attention.scaled")
    probs = g.op("Softmax", [scores], "attention.softmax", axis=-1)
    context = g.op("MatMul", [probs, v], "attention.context")
    context = g.op("Transpose", [context], "attention.context.transpose", perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, merge_shape], "attention.context.reshape")
    attn = _linear(g, context, hidden, hidden, "attention.output.dense")
    attn = g.op("Add", [attn, x], "attention.output.residual")
    attn = _layer_norm(g, attn, hidden, "attention.output.LayerNorm")

    inter = _linear(g, attn, hidden, ffn, "intermediate.dense")
    inter = _gelu_erf(g, inter, "intermediate.gelu")
    out = _linear(g, inter, ffn, hidden, "output.dense")
    out = g.op("Add", [out, attn], "output.residual")
    if log_softmax_head:
        out = _layer_norm(g, out, hidden, "output.LayerNorm")
        out = g.op("LogSoftmax", [out], "output", axis=-1)
    else:
        out = _layer_norm(g, out, hidden, "output.LayerNorm", out="output")
    shape = [batch, seq, hidden]
    return g.model([("data", shape)], [(out, shape)], "encoder_block")


def mlp_onnx(
    batch: int = 1,
    in_features: int = 256,
    hidden: Sequence[int] = (512, 256),
    out_features: int = 10,
    seed: int = 0,
) -> onnx.ModelProto:
    """A stack of MatMul+Add+Relu layers and a final MatMul+Add (``data`` -> ``logits``)."""
    g = GraphBuilder(seed)
    x, width = "data", in_features
    for i, h in enumerate(hidden):
        x = g.op("Relu", [_linear(g, x, width, h, f"fc{i}")], f"fc{i}.relu")
        width = h
    x = _linear(g, x, width, out_features, f"fc{len(hidden)}", out="logits")
    return g.model([("data", [batch, in_features])], [(x, [batch, out_features])], "mlp")
