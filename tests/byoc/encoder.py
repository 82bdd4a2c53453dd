"""A BERT encoder layer built in Relax exactly as the ONNX importer writes MiniLM's
(``tvm_onednn.models.minilm``): q/k/v projections, heads split by reshape/permute_dims,
q and k scaled by a scalar, the attention mask added as ``where(mask, 0, -big)``, a
softmax with the exporter's NaN guard, the erf-form GELU, residual adds and layer_norms."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

HIDDEN, HEADS, FFN = 64, 4, 128
HEAD = HIDDEN // HEADS


def _weight(rng, shape, scale=None):
    scale = scale or 1.0 / np.sqrt(shape[0])
    return relax.const((rng.standard_normal(shape) * scale).astype("float32"))


def _const(value):
    return relax.const(np.float32(value))


def encoder_layer(bb, x, mask_add, rng, b, s):
    """One layer on ``x`` [b, s, HIDDEN] with the additive mask ``mask_add`` [b, 1, s, s]."""

    def dense(inp, n_in, n_out):
        out = bb.emit(relax.op.matmul(inp, _weight(rng, (n_in, n_out))))
        return bb.emit(relax.op.add(_weight(rng, (n_out,), 0.1), out))

    def heads(t, axes):
        t = bb.emit(relax.op.reshape(t, [b, s, HEADS, HEAD]))
        return bb.emit(relax.op.permute_dims(t, axes))

    scale = _const(HEAD**-0.25)
    q = bb.emit(relax.op.multiply(heads(dense(x, HIDDEN, HIDDEN), [0, 2, 1, 3]), scale))
    k = bb.emit(relax.op.multiply(heads(dense(x, HIDDEN, HIDDEN), [0, 2, 3, 1]), scale))
    v = heads(dense(x, HIDDEN, HIDDEN), [0, 2, 1, 3])
    scores = bb.emit(relax.op.add(bb.emit(relax.op.matmul(q, k)), mask_add))
    probs = bb.emit(relax.op.nn.softmax(scores, axis=-1))
    probs = bb.emit(relax.op.where(bb.emit(relax.op.isnan(probs)), _const(0.0), probs))
    ctx = bb.emit(relax.op.matmul(probs, v))
    ctx = bb.emit(relax.op.permute_dims(ctx, [0, 2, 1, 3]))
    ctx = bb.emit(relax.op.reshape(ctx, [b, s, HIDDEN]))
    attn = bb.emit(relax.op.add(dense(ctx, HIDDEN, HIDDEN), x))
    attn = bb.emit(_layer_norm(attn, rng))
    h = dense(attn, HIDDEN, FFN)
    erf = bb.emit(relax.op.erf(bb.emit(relax.op.divide(h, _const(1.4142135)))))
    h = bb.emit(relax.op.multiply(h, bb.emit(relax.op.add(erf, _const(1.0)))))
    h = bb.emit(relax.op.multiply(h, _const(0.5)))  # GELU as exported: x * (erf + 1) * 0.5
    out = bb.emit(relax.op.add(dense(h, FFN, HIDDEN), attn))
    return bb.emit(_layer_norm(out, rng))


def _layer_norm(x, rng):
    gamma = relax.const((1 + 0.1 * rng.standard_normal(HIDDEN)).astype("float32"))
    beta = relax.const((0.1 * rng.standard_normal(HIDDEN)).astype("float32"))
    return relax.op.nn.layer_norm(x, gamma, beta, axes=[-1], epsilon=1e-12)


def encoder_module(layers: int = 1, seed: int = 0) -> tvm.IRModule:
    """``main(x [b, s, HIDDEN] f32, mask [b, s] bool)`` -> hidden states, ``layers``
    layers; b and s are symbolic. The mask arithmetic stays a TVM op feeding each layer."""
    rng = np.random.default_rng(seed)
    b, s = tvm.tirx.Var("batch", "int64"), tvm.tirx.Var("sequence", "int64")
    x = relax.Var("x", relax.TensorType([b, s, HIDDEN], "float32"))
    mask = relax.Var("mask", relax.TensorType([b, s], "bool"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, mask]):
        with bb.dataflow():
            keep = bb.emit(relax.op.reshape(mask, [b, 1, 1, s]))
            keep = bb.emit(relax.op.broadcast_to(keep, [b, 1, s, s]))
            out = x
            for _ in range(layers):
                big = _const(-3.4028234663852886e38)
                mask_add = bb.emit(relax.op.where(keep, _const(0.0), big))
                out = encoder_layer(bb, out, mask_add, rng, b, s)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.finalize()


def encoder_inputs(batch: int, seq: int, seed: int = 0) -> list[np.ndarray]:
    """Hidden states and a mask whose row ``i`` pads its last ``i`` tokens."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq, HIDDEN)).astype("float32")
    mask = np.ones((batch, seq), dtype=bool)
    for row in range(batch):
        mask[row, max(seq - row, 1) :] = False
    return [x, mask]
