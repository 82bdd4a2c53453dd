"""Writing a custom calibration collector (the shape of MXNet 2.0's example).

int8 quantization needs a range ``(min, max)`` for every tensor that becomes int8. The
quantizer runs the float model on calibration batches and hands each observed tensor to a
*collector*: ``collect(name, op_name, arr)`` for every tensor, then ``post_collect()`` for
the ranges. ``tvm_onednn.calib.CalibrationCollector`` has MXNet 2.0's contract, so an
MXNet collector ports with an import change. This one is naive min/max that also logs how
each layer's range grows, the example MXNet's documentation gives.

    python tutorials/custom_collector.py          # 32 calibration images
    python tutorials/custom_collector.py --fast   # 8, for CI
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

# MXNet: from mxnet.contrib.quantization import CalibrationCollector; from mxnet import cpu
from tvm_onednn.calib import CalibrationCollector, cpu

logger = logging.getLogger("range_logger")


class RangeLoggingCollector(CalibrationCollector):
    """Naive min/max calibration that logs every layer's range as it widens."""

    def __init__(self, include_layers=None, logger=logger):
        super().__init__(include_layers)
        self.logger = logger
        self.batches_seen = {}

    def collect(self, name, op_name, arr):
        # The quantizer fills include_layers with what it needs; None means "all".
        if self.include_layers is not None and name not in self.include_layers:
            return
        arr = arr.copyto(cpu()).asnumpy()  # the MXNet idiom; arr may be a numpy array too
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if name in self.min_max_dict:
            old_lo, old_hi = self.min_max_dict[name]
            lo, hi = min(lo, old_lo), max(hi, old_hi)
        self.min_max_dict[name] = (lo, hi)
        self.batches_seen[name] = self.batches_seen.get(name, 0) + 1
        self.logger.debug("%-28s %-18s range [% .4f, % .4f]", name, op_name, lo, hi)

    def post_collect(self):
        for name, (lo, hi) in sorted(self.min_max_dict.items()):
            self.logger.info(
                "%-28s [% .4f, % .4f] over %d batch(es)", name, lo, hi, self.batches_seen[name]
            )
        return self.min_max_dict


def demo_contract() -> None:
    """What the quantizer does with a collector, by hand: collect, collect, post_collect."""
    from tvm_onednn.calib import as_calib_array

    collector = RangeLoggingCollector(include_layers=["conv0_output"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        collector.collect("conv0_output", "conv2d", as_calib_array(rng.standard_normal((1, 8))))
        collector.collect("ignored_layer", "relu", as_calib_array(rng.standard_normal((1, 8))))
    ranges = collector.post_collect()
    assert list(ranges) == ["conv0_output"]
    print(f"by hand: {ranges}")


def quantize_with(collector: RangeLoggingCollector, num_images: int) -> None:
    """``quantize(..., calib_mode="custom", collector=...)`` on the bundled small ResNet."""
    try:
        from tvm_onednn.quantize import quantize
    except ImportError as err:
        print(f"tvm_onednn.quantize is not available here ({err}); skipping the int8 model")
        return
    import tvm_onednn
    from tvm_onednn.models import small_resnet_onnx
    from tvm_onednn.testing import Runner, build

    mod = tvm_onednn.from_onnx(small_resnet_onnx(batch=1))
    rng = np.random.default_rng(1)
    calib = [{"data": rng.standard_normal((1, 3, 32, 32)).astype("float32")}
             for _ in range(num_images)]  # fmt: skip
    qmod = quantize(mod, calib, calib_mode="custom", collector=collector)
    print(f"the quantizer asked for {len(collector.include_layers)} ranges; got "
          f"{len(collector.min_max_dict)}")  # fmt: skip
    x = rng.standard_normal((1, 3, 32, 32)).astype("float32")
    fp32, int8 = Runner(build(mod))(x), Runner(build(qmod))(x)
    print(f"fp32 top-1 {int(fp32.argmax())}, int8 top-1 {int(int8.argmax())}, "
          f"max |int8 - fp32| {np.abs(int8 - fp32).max():.4f} (outputs up to "
          f"{np.abs(fp32).max():.3f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer calibration images (CI)")
    parser.add_argument("--verbose", action="store_true", help="log every collect() call")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    demo_contract()
    quantize_with(RangeLoggingCollector(), num_images=8 if args.fast else 32)


if __name__ == "__main__":
    main()
