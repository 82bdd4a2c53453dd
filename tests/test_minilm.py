"""all-MiniLM-L6-v2 (issue 12) through the "onednn" pipeline: the encoder is one oneDNN
region, and the sentence embedding matches onnxruntime.

The model is exported with dynamic batch and sequence (``tvm_onednn.models.minilm``),
compiled once, and run at small sizes. Per encoder layer, every matmul, layer_norm,
softmax and GELU runs in oneDNN; TVM keeps the embedding gathers, the mask arithmetic
(computed once, an input of the region) and the pooling.
"""

from collections import Counter

import numpy as np
import onnx
import pytest

from tvm_onednn import from_onnx
from tvm_onednn.byoc.summary import offload_summary
from tvm_onednn.models.minilm import MINILM_INPUTS, minilm_inputs, minilm_missing, minilm_onnx
from tvm_onednn.testing import Runner, build

ort = pytest.importorskip("onnxruntime")
if minilm_missing():
    pytest.skip(minilm_missing(), allow_module_level=True)

LAYERS = 6
#: Composites of one encoder layer.
PER_LAYER = {
    "onednn.matmul_bias": 3,  # q, k, v
    "onednn.reshape": 5,  # heads split (3), a no-op reshape of the context, heads merged
    "onednn.transpose": 4,
    "onednn.matmul_add": 1,  # q.k^T * 1/sqrt(32) (folded q, k scales) + attention mask
    "onednn.softmax": 1,  # with the exporter's NaN guard
    "onednn.matmul": 1,  # probabilities @ v
    "onednn.matmul_bias_add": 2,  # attention output and FFN output, + residual
    "onednn.layer_norm": 2,
    "onednn.matmul_bias_gelu": 1,  # the erf GELU, recognized
}
#: Cosine similarity of the sentence embeddings (fp32 both sides).
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return minilm_onnx(batch=2, seq=8, dynamic=True)


@pytest.fixture(scope="module")
def module(model):
    return from_onnx(model)


def test_each_encoder_layer_runs_in_one_onednn_region(module):
    summary = offload_summary(module)
    assert summary.regions == 1, str(summary)
    expected = Counter({name: n * LAYERS for name, n in PER_LAYER.items()})
    expected["onednn.layer_norm"] += 1  # the embeddings' layer_norm ...
    expected["onednn.add"] += 2  # ... after word + token type + position embeddings
    expected["onednn.multiply"] += 1  # pooling: hidden states * mask, next to the region
    assert summary.composites == expected, str(summary)
    for op in ("relax.matmul", "relax.nn.layer_norm", "relax.nn.softmax", "relax.nn.gelu"):
        assert op not in summary.kept_ops, str(summary)
    assert "relax.erf" not in summary.kept_ops and "relax.isnan" not in summary.kept_ops


@pytest.mark.parametrize("batch, seq", [(1, 16), (2, 9)])
def test_sentence_embedding_matches_onnxruntime(model, module, batch, seq):
    runner = Runner(build(module))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = minilm_inputs(batch, seq, seed=seq)
    hidden, embedding = runner(*(feeds[name] for name in MINILM_INPUTS))
    ref_hidden, ref_embedding = session.run(None, feeds)
    cosine = np.sum(embedding * ref_embedding, axis=1) / (
        np.linalg.norm(embedding, axis=1) * np.linalg.norm(ref_embedding, axis=1)
    )
    assert cosine.min() >= MIN_COSINE, cosine
    # The hidden states too (fp32, other summation orders).
    np.testing.assert_allclose(hidden, ref_hidden, rtol=1e-3, atol=1e-3)
