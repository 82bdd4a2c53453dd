"""Fixtures: pin the weight encoding that otherwise follows this CPU's int8 instructions."""

import pytest

from tvm_onednn.quantize import weights


@pytest.fixture
def vnni_cpu(monkeypatch):
    """Quantize as for a CPU with int8 dot products: full 8-bit weights."""
    monkeypatch.setattr(weights, "has_int8_dot_product", lambda: True)


@pytest.fixture
def avx2_cpu(monkeypatch):
    """Quantize as for a CPU without int8 dot products: bounded or halved weights."""
    monkeypatch.setattr(weights, "has_int8_dot_product", lambda: False)
