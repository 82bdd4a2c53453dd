"""``compile --quantize int8``: --calib-mode choices come from the collector registry, and
the quantizer's report (layers int8 / kept float32 and why, calibration backend) is printed."""

import numpy as np
import pytest

from tvm_onednn.calib import NaiveCollector, register_collector
from tvm_onednn.calib import registry as calib_registry
from tvm_onednn.cli.main import build_parser, main
from tvm_onednn.interface import QuantizeOptions
from tvm_onednn.interface.io import InputError
from tvm_onednn.quantize import CALIB_MODES, calib_modes


class HalfRangeCollector(NaiveCollector):
    """min/max, halved: a collector a user registers under a name of its own."""

    def post_collect(self):
        return {name: (lo / 2, hi / 2) for name, (lo, hi) in super().post_collect().items()}


@pytest.fixture
def registered():
    """``halfrange`` registered for one test (the registry has no public unregister)."""
    register_collector("halfrange", HalfRangeCollector)
    yield "halfrange"
    calib_registry._REGISTRY.pop("halfrange", None)


def test_calib_mode_choices_follow_the_registry(registered):
    args = build_parser().parse_args(
        ["compile", "m.onnx", "-o", "m.so", "--quantize", "int8", "--calib-mode", registered]
    )
    assert args.calib_mode == "halfrange"
    assert QuantizeOptions(calib_data="c.npz", calib_mode=registered).calib_mode == registered
    # The quantizer's own list is live too: registered collectors, then custom and none.
    assert calib_modes()[-2:] == ("custom", "none") and registered in calib_modes()
    assert registered in CALIB_MODES and list(CALIB_MODES) == list(calib_modes())


def test_unregistered_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", "m.onnx", "-o", "m.so", "--quantize", "int8", "--calib-mode", "halfrange"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'halfrange'" in err and "'naive'" in err and "'none'" in err
    with pytest.raises(InputError, match="unknown calibration mode 'halfrange'"):
        QuantizeOptions(calib_data="c.npz", calib_mode="halfrange")
    # "custom" needs a collector instance, which a command line cannot give.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compile", "m.onnx", "-o", "m.so", "--calib-mode", "custom"])


def test_compile_with_a_registered_mode_prints_the_report(model_dir, registered, tmp_path, capsys):
    out = tmp_path / "int8.so"
    argv = ["compile", str(model_dir / "small.onnx"), "-o", str(out), "--quantize", "int8"]
    argv += ["--calib-data", str(model_dir / "calib.npz"), "--calib-mode", registered]
    argv += ["--num-calib-batches", "2", "--exclude-layers", "conv2d_3"]
    assert main(argv + ["--dump-ir", str(tmp_path / "ir")]) == 0
    printed = capsys.readouterr().out
    assert "compiled int8 model" in printed
    assert "int8 quantization: 8 of 9 layers int8 (conv2d 5/6, max_pool2d 1/1" in printed
    assert "calibration: halfrange (HalfRangeCollector), 2 batch(es), ran on float32 oneDNN" in (
        printed
    )
    assert "kept float32 (1):\n  excluded by the user (1):\n    conv2d_3: excluded by" in printed
    assert "onednn.qconv2d" in printed  # the offload summary follows
    # The whole table (one row per layer) goes beside the dumped IR.
    table = (tmp_path / "ir" / "quantize_report.txt").read_text()
    assert "conv2d_0 " in table and "onednn.qconv2d_bias_relu" in table
    result = tmp_path / "out.npz"
    assert main(["run", str(out), "--inputs", str(model_dir / "in.npz"), "-o", str(result)]) == 0
    assert np.isfinite(np.load(result)["output_0"]).all()
