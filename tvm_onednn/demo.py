"""The bundled end-to-end job: MobileNetV2 (real ImageNet weights) on real photos.

The model is exported with a free batch axis and compiled **once** for float32 and once for
int8 (calibrated on augmented crops of the bundled photos); each library then runs batch 1
and batch 8 (``--batch``). Printed: what went to oneDNN, the top-5 classes of every photo
in float32 and int8, and the median latency of each batch next to ONNX Runtime's on the
same inputs, with the ISA oneDNN runs on. Nothing is downloaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .byoc import OffloadSummary, offload_summary
from .interface.benchmarking import interleaved
from .interface.io import dynamic_batch
from .interface.run import plans_cached

#: Calibration crops (two batches of the bundled photos, augmented).
CALIB_CROPS = 16
CALIB_BATCH = 8


def imagenet_class_names() -> list[str] | None:
    """The 1000 ImageNet class names when a package ships them offline (torchvision), else
    None (classes are then printed by index)."""
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES
    except Exception:  # noqa: BLE001  (not installed, or a torch/torchvision mismatch)
        return None
    names = list(_IMAGENET_CATEGORIES)
    return names if len(names) == 1000 else None


@dataclass
class PhotoResult:
    name: str
    label: int  # ImageNet class of the photo, or -1 when no single class fits
    fp32_top5: list[int]
    int8_top5: list[int]


@dataclass
class Timing:
    system: str
    batch: int
    median_ms: float

    @property
    def items_per_second(self) -> float:
        return self.batch / (self.median_ms / 1e3)


@dataclass
class DemoReport:
    summary: OffloadSummary
    isa: str
    threads: int
    compile_seconds: dict[str, float]
    photos: list[PhotoResult]
    timings: list[Timing]
    max_abs_diff: dict[int, float]  # batch -> |tvm-onednn fp32 - onnxruntime|
    batch1_matches: bool  # batch 1 from the free-batch library == row 0 of the larger batch
    #: oneDNN plans each library holds after the run (one per region and shape run)
    plans_cached: dict[str, int | None] = field(default_factory=dict)
    class_names: list[str] | None = field(default=None, repr=False)

    def _cls(self, c: int) -> str:
        if self.class_names is None:
            return str(c)
        return f"{c} {self.class_names[c]}"

    def timing(self, system: str, batch: int) -> Timing | None:
        return next((t for t in self.timings if t.system == system and t.batch == batch), None)

    def __str__(self) -> str:
        lines = [
            "MobileNetV2 (ImageNet weights), input data:[batch, 3, 224, 224], compiled once "
            "per precision: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in self.compile_seconds.items()),
            str(self.summary),
            "",
            "top-5 classes"
            + ("" if self.class_names else " (ImageNet indices; no class names installed)"),
        ]
        for p in self.photos:
            label = f" (label {self._cls(p.label)})" if p.label >= 0 else ""
            lines.append(f"  {p.name}{label}")
            lines.append(f"    fp32: {', '.join(self._cls(c) for c in p.fp32_top5)}")
            lines.append(f"    int8: {', '.join(self._cls(c) for c in p.int8_top5)}")
        agree = sum(p.fp32_top5[0] == p.int8_top5[0] for p in self.photos)
        lines.append(f"int8 top-1 = fp32 top-1 on {agree} of {len(self.photos)} photos")
        lines += ["", f"latency, {self.threads} thread(s), oneDNN ISA {self.isa} (median ms)"]
        lines.append(
            f"  {'batch':>5} {'system':<20} {'ms':>9} {'items/s':>9} {'vs onnxruntime':>15}"
        )
        for t in self.timings:
            ref = self.timing("onnxruntime", t.batch)
            ratio = f"{ref.median_ms / t.median_ms:.2f}x" if ref else "-"
            lines.append(
                f"  {t.batch:>5} {t.system:<20} {t.median_ms:>9.2f} "
                f"{t.items_per_second:>9.1f} {ratio:>15}"
            )
        for batch, diff in sorted(self.max_abs_diff.items()):
            lines.append(f"batch {batch}: max |tvm-onednn fp32 - onnxruntime| = {diff:.2e}")
        lines.append(
            "batch 1 and the first item of the larger batch agree: "
            + ("yes" if self.batch1_matches else "NO")
        )
        plans = ", ".join(f"{k} {v}" for k, v in self.plans_cached.items() if v is not None)
        if plans:
            lines.append(f"oneDNN plans cached (one per region and batch): {plans}")
        return "\n".join(lines)


def _photo_batch(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n`` center-cropped bundled photos (cycled when there are fewer), cat first."""
    from .models.images import imagenet_batch, load_photos

    names = sorted(load_photos(), key=lambda name: name != "chelsea")
    names = [names[i % len(names)] for i in range(n)]
    x, labels = imagenet_batch(names)
    return names, x, labels


def _runner(executable):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    main = vm["main"]

    def run(x: np.ndarray) -> np.ndarray:
        return main(tvm.runtime.tensor(np.ascontiguousarray(x))).numpy()

    return run


def run_demo(
    batches: Sequence[int] = (1, 8),
    repeats: int = 10,
    calib_mode: str = "percentile",
    threads: int | None = None,
) -> DemoReport:
    """Compile MobileNetV2 once with a free batch (fp32 and int8), run and time ``batches``."""
    import onnxruntime as ort

    from . import _ffi_api
    from .frontend import from_onnx
    from .models import imagenet_crops, mobilenet_v2_onnx
    from .quantize import quantize
    from .threads import default_num_threads, set_num_threads
    from .tuning import compile_model

    batches = sorted(set(batches))
    if not batches or batches[0] < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = threads or default_num_threads()
    set_num_threads(threads)
    affinity = os.sched_getaffinity(0)

    model = dynamic_batch(mobilenet_v2_onnx())
    mod = from_onnx(model)  # data: [batch, 3, 224, 224]
    compile_seconds = {}
    start = time.perf_counter()
    fp32_lib = compile_model(mod)
    fp32 = _runner(fp32_lib)
    compile_seconds["fp32"] = time.perf_counter() - start
    start = time.perf_counter()
    calib, _ = imagenet_crops(CALIB_CROPS, seed=0)
    calib_batches = [
        {"data": calib[i : i + CALIB_BATCH]} for i in range(0, CALIB_CROPS, CALIB_BATCH)
    ]
    int8_lib = compile_model(quantize(mod, calib_batches, calib_mode=calib_mode))
    int8 = _runner(int8_lib)
    compile_seconds[f"int8 ({calib_mode} calibration on {CALIB_CROPS} crops)"] = (
        time.perf_counter() - start
    )

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names, x, labels = _photo_batch(batches[-1])
    systems = {"tvm-onednn fp32": fp32, "tvm-onednn int8": int8,
               "onnxruntime": lambda a: session.run(None, {"data": a})[0]}  # fmt: skip
    calls, outputs = {}, {}
    for batch in batches:
        for system, run in systems.items():
            outputs[(system, batch)] = run(x[:batch])  # the first call at this shape
            if os.sched_getaffinity(0) != affinity:
                os.sched_setaffinity(0, affinity)  # TVM's pool may pin this thread
            calls[(system, batch)] = (lambda r, a: lambda: r(a))(run, x[:batch])
    samples = interleaved(calls, rounds=repeats, block=1)
    timings = [Timing(s, b, float(np.median(v))) for (s, b), v in samples.items()]

    fp32_out = outputs[("tvm-onednn fp32", batches[-1])]
    int8_out = outputs[("tvm-onednn int8", batches[-1])]
    photos = [
        PhotoResult(
            name,
            int(label),
            [int(c) for c in np.argsort(-fp32_out[i], kind="stable")[:5]],
            [int(c) for c in np.argsort(-int8_out[i], kind="stable")[:5]],
        )
        for i, (name, label) in enumerate(zip(names, labels))
    ]
    max_abs_diff = {
        b: float(np.abs(outputs[("tvm-onednn fp32", b)] - outputs[("onnxruntime", b)]).max())
        for b in batches
    }
    first = outputs[("tvm-onednn fp32", batches[0])]
    matches = bool(np.allclose(first, fp32_out[: len(first)], rtol=0, atol=1e-3))
    return DemoReport(
        summary=offload_summary(mod),
        isa=_ffi_api.cpu_isa(),
        threads=threads,
        compile_seconds=compile_seconds,
        photos=photos,
        timings=timings,
        max_abs_diff=max_abs_diff,
        batch1_matches=matches,
        plans_cached={"fp32": plans_cached(fp32_lib.mod), "int8": plans_cached(int8_lib.mod)},
        class_names=imagenet_class_names(),
    )
