"""``tvm-onednn inspect``: a model's inputs and what the partition sends to oneDNN."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..byoc.summary import OffloadSummary, offload_summary
from .io import TensorSpec, format_shape, import_model


@dataclass
class Inspection:
    model: str
    inputs: list[TensorSpec]
    summary: OffloadSummary

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "inputs": [s.as_dict() for s in self.inputs],
            "offload": self.summary.as_dict(),
        }

    def __str__(self) -> str:
        shapes = ", ".join(f"{s.name}:{format_shape(s.shape)} {s.dtype}" for s in self.inputs)
        return f"{self.model}\ninputs: {shapes}\n{self.summary}"


def inspect_model(
    model: str | os.PathLike, input_shapes: dict[str, list[int]] | None = None
) -> Inspection:
    """Import ``model`` and summarize its oneDNN offload (nothing is compiled). Dims the
    model leaves free (a dynamic batch axis) stay free unless ``input_shapes`` fixes them."""
    mod, specs = import_model(model, input_shapes)
    return Inspection(os.fspath(model), list(specs), offload_summary(mod))
