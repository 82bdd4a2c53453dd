"""The Python face of the runtime's plan cache size."""

import pytest

import tvm_onednn


def test_set_and_get_plan_cache_size_round_trip():
    before = tvm_onednn.get_plan_cache_size()
    try:
        tvm_onednn.set_plan_cache_size(3)
        assert tvm_onednn.get_plan_cache_size() == 3
    finally:
        tvm_onednn.set_plan_cache_size(before)
    assert tvm_onednn.get_plan_cache_size() == before


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_plan_cache_size_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="plan cache size must be an integer >= 1"):
        tvm_onednn.set_plan_cache_size(bad)
