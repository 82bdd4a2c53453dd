"""Shared fixtures: the bundled small ResNet as an ONNX file, inputs, and its compiled .so."""

import numpy as np
import onnx
import pytest

from tvm_onednn.cli.main import main
from tvm_onednn.models.resnet import small_resnet_onnx


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """small.onnx, in.npz (one input) and calib.npz (8 samples) in one directory."""
    d = tmp_path_factory.mktemp("cli_model")
    onnx.save(small_resnet_onnx(), d / "small.onnx")
    rng = np.random.default_rng(0)
    np.savez(d / "in.npz", data=rng.standard_normal((1, 3, 32, 32)).astype("float32"))
    np.savez(d / "calib.npz", data=rng.standard_normal((8, 3, 32, 32)).astype("float32"))
    return d


@pytest.fixture(scope="session")
def compiled(model_dir):
    """small.so compiled by ``tvm-onednn compile`` (fp32)."""
    out = model_dir / "small.so"
    assert main(["compile", str(model_dir / "small.onnx"), "-o", str(out)]) == 0
    return out
