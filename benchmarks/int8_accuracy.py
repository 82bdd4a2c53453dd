"""int8 accuracy on held-out data (issue 13): tvm-onednn vs onnxruntime vs OpenVINO NNCF.

Protocol. Calibrate with ``N`` images (batch 1), evaluate on a *disjoint* held-out set: other
random crops of the photos, drawn from another seed, checked to share no image with any
calibration set. Nothing is tuned on the evaluation set (tuning uses :func:`dev_set`, a
third seed). Every system quantizes the same float32 model from the same calibration images
and is scored on the same held-out images in the same run:

* ``tvm-onednn:<calib_mode>`` for each registered mode (``naive``, ``entropy``, ...);
* ``tvm-onednn-control:<calib_mode>``: the same with accuracy control
  (``validation=(dev crops, top1_agreement), max_drop=CONTROL_MAX_DROP``); the dev crops
  (:func:`dev_set`) are disjoint from the held-out set (asserted), MobileNetV2 only;
* ``ort:minmax`` / ``ort:entropy``: onnxruntime ``quantize_static``, QDQ, per-channel, its
  defaults otherwise. Note: its Entropy calibrator's defaults (128 histogram bins, 128
  quantized bins) leave one candidate threshold, the full range: ``ort:entropy`` gets the
  same scales as ``ort:minmax`` (checked on the digits CNN);
* ``nncf:default`` (``fast_bias_correction=True``, NNCF's default) and
  ``nncf:bias_correction`` (``fast_bias_correction=False``, the full algorithm), default
  preset, on OpenVINO.

Reference precisions (MobileNetV2 and MiniLM, no int8 involved): the same float32 model run
entirely in ``bfloat16`` and in ``float16`` (torch's CPU kernels: weights, inputs and every
op's output rounded to that format), scored like the int8 systems. They show how close to a
tie the evaluation data is: an int8 model is not expected to agree with float32 more than
the bfloat16 one (8 significant bits per value, like int8's 8-bit levels but relative to each
value's magnitude). ``near_tie_fraction``: the share of held-out crops whose float32 top-2
softmax probabilities differ by less than ``NEAR_TIE_MARGIN``.

Scores: top-1 / top-5 agreement of the int8 top-1 class with the float32 model's
(MobileNetV2, real ImageNet weights), and labelled top-1 accuracy for the digits CNN of
``tests/quantize/test_accuracy.py`` (trained in-process; its calibration images are training
images, the held-out set is the test split). A missing peer is skipped with a note.

Photos: those of :func:`tvm_onednn.models.load_photos` (skimage ``chelsea coffee rocket
astronaut camera stereo_motorcycle``, sklearn ``china flower``, matplotlib
``grace_hopper``) and, with ``--photos all`` (default), more skimage photos
(:data:`EXTRA_SKIMAGE_PHOTOS`).

MiniLM (``--models minilm``): sentence-embedding cosine and pair ranking of int8 vs float32 on
held-out sentences, its own systems and calibration rows (``benchmarks/minilm_accuracy.py``).

    .venv/bin/python benchmarks/int8_accuracy.py --out bench-results/int8_accuracy.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

import tvm_onednn
from tvm_onednn.models import images as _images
from tvm_onednn.quantize import top1_agreement
from tvm_onednn.testing import Runner, build

#: skimage photos (real scenes, no download) beyond those of ``load_photos``.
EXTRA_SKIMAGE_PHOTOS = (
    "clock", "coins", "brick", "grass", "gravel", "moon",
    "hubble_deep_field", "immunohistochemistry", "retina",
)  # fmt: skip
#: Seeds of the crop streams: calibration sets, the held-out set, the tuning (dev) set.
CALIB_SEED, EVAL_SEED, DEV_SEED = 1000, 2000, 3000
TVM_MODES = ("naive", "entropy", "percentile")
PEERS = ("ort:minmax", "ort:entropy", "nncf:default", "nncf:bias_correction")
#: ``tvm-onednn-control:<mode>``: accuracy control on the dev set (:func:`dev_set`, never the
#: held-out set) with this top-1 agreement budget.
CONTROL_MAX_DROP, CONTROL_DEV_CROPS = 0.05, 100
#: The reference precisions: the float32 model run entirely in these torch dtypes.
REFERENCE_DTYPES = ("bfloat16", "float16")
#: A crop is a near tie when float32's top-2 class probabilities differ by less than this.
NEAR_TIE_MARGIN = 0.05


# --- data -----------------------------------------------------------------------------------


def source_photos(which: str = "all") -> dict[str, np.ndarray]:
    """``name -> HxWx3 uint8`` photos: ``"tests"`` (those the tests use) or ``"all"``."""
    if which not in ("tests", "all"):
        raise ValueError(f"photos must be 'tests' or 'all', got {which!r}")
    photos = {name: image for name, (image, _) in _images.load_photos().items()}
    if which == "all":
        import skimage.data

        for name in EXTRA_SKIMAGE_PHOTOS:
            photos[name] = _images._rgb(getattr(skimage.data, name)())
    return {name: _shrink(image) for name, image in photos.items()}


def _shrink(image: np.ndarray, short_side: int = 512) -> np.ndarray:
    """Large photos (retina, hubble) downscaled once so that crops are cheap to resize."""
    h, w = image.shape[:2]
    if min(h, w) <= short_side:
        return image
    scale = short_side / min(h, w)
    small = _images._resize(image, round(h * scale), round(w * scale))
    return np.round(small * 255).astype(np.uint8)


def _crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 35-100 % of the area (aspect 3/4..4/3, clamped to the image),
    resized to 224x224, randomly flipped, normalized. Unlike ``imagenet_crops`` it has no
    deterministic fallback (the central square), so two draws are never the same image."""
    h, w = image.shape[:2]
    area = h * w * rng.uniform(0.35, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = min(h, max(8, round(np.sqrt(area / aspect))))
    cw = min(w, max(8, round(np.sqrt(area * aspect))))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    view = _images._resize(image[top : top + ch, left : left + cw], 224, 224)
    return _images.normalize(view[:, ::-1] if rng.random() < 0.5 else view)


def crops(photos: dict[str, np.ndarray], n: int, seed: int | Sequence[int]) -> np.ndarray:
    """``n`` random crops (:func:`_crop`) cycling through ``photos`` in a random order (so a
    small set does not always see the same photos): [n, 3, 224, 224]."""
    rng = np.random.default_rng(seed)
    images = [photos[name] for name in sorted(photos)]
    order = rng.permutation(len(images))
    views = [_crop(images[order[i % len(images)]], rng) for i in range(n)]
    return np.stack(views).astype(np.float32)


def _digests(x: np.ndarray) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in x}


def assert_disjoint(calib: np.ndarray, held_out: np.ndarray) -> None:
    """Raise when an image occurs in both sets."""
    shared = _digests(calib) & _digests(held_out)
    if shared:
        raise AssertionError(f"{len(shared)} image(s) in both calibration and held-out sets")


def dev_set(photos: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Crops for tuning quantization choices (never the held-out set)."""
    return crops(photos, n, DEV_SEED)


# --- scores ---------------------------------------------------------------------------------


def agreement(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Top-1 / top-5 agreement of the int8 top-1 class with the float32 logits."""
    top1 = int8.argmax(axis=1)
    ref5 = np.argsort(-fp32, axis=1)[:, :5]
    return {
        "top1_agreement": float(np.mean(top1 == ref5[:, 0])),
        "top5_agreement": float(np.mean((ref5 == top1[:, None]).any(axis=1))),
    }


def near_tie_fraction(fp32: np.ndarray, margin: float = NEAR_TIE_MARGIN) -> float:
    """The share of rows of ``fp32`` logits whose top-2 softmax probabilities differ by less
    than ``margin``."""
    z = fp32 - fp32.max(axis=1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(axis=1, keepdims=True)
    top2 = np.sort(prob, axis=1)[:, -2:]
    return float(np.mean(top2[:, 1] - top2[:, 0] < margin))


# --- systems --------------------------------------------------------------------------------

Predict = Callable[[np.ndarray], np.ndarray]  # one batch -> logits


def _tvm_system(mode: str, mod, calib: Sequence[np.ndarray], **options) -> Predict:
    qmod = tvm_onednn.quantize(mod, [{"data": b} for b in calib], calib_mode=mode, **options)
    return Runner(build(qmod))


def _tvm_control_system(mode: str, mod, calib: Sequence[np.ndarray], validation, notes: dict):
    """``quantize(..., validation=(dev crops, top1_agreement), max_drop=CONTROL_MAX_DROP)``."""
    if validation is None:
        raise ValueError("no validation set for this model")
    qmod, report = tvm_onednn.quantize(
        mod, [{"data": b} for b in calib], calib_mode=mode, return_report=True,
        validation=(validation, top1_agreement),
        max_drop=CONTROL_MAX_DROP,
    )  # fmt: skip
    notes.update(report.accuracy_control.as_dict())
    notes.pop("ranking")
    return Runner(build(qmod))


class _Reader:
    """onnxruntime ``CalibrationDataReader`` over a list of batches."""

    def __init__(self, name: str, batches: Sequence[np.ndarray]):
        self.items = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.items, None)


def _ort_system(method: str, onnx_bytes: bytes, calib: Sequence[np.ndarray], tmp: Path):
    import onnxruntime as ort
    from onnxruntime import quantization as q

    src, dst = tmp / "fp32.onnx", tmp / f"int8_{method}.onnx"
    src.write_bytes(onnx_bytes)
    q.quantize_static(
        str(src), str(dst), _Reader("data", calib), quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        calibrate_method={"minmax": q.CalibrationMethod.MinMax,
                          "entropy": q.CalibrationMethod.Entropy}[method],
    )  # fmt: skip
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"data": x})[0]


def _nncf_system(variant: str, onnx_bytes: bytes, calib: Sequence[np.ndarray], tmp: Path):
    import nncf
    import openvino as ov

    src = tmp / "fp32.onnx"
    src.write_bytes(onnx_bytes)
    model = ov.convert_model(str(src))
    quantized = nncf.quantize(
        model, nncf.Dataset(list(calib)), subset_size=len(calib),
        fast_bias_correction=(variant == "default"),
    )  # fmt: skip
    compiled = ov.Core().compile_model(quantized, "CPU")
    return lambda x: compiled(x)[0]


def reference_precisions(
    held_out: np.ndarray, fp32: np.ndarray, dtypes: Sequence[str] = REFERENCE_DTYPES
) -> dict[str, dict]:
    """Agreement with ``fp32`` of MobileNetV2 (the same weights, torch) run entirely in each
    of ``dtypes`` on ``held_out``; a note instead when torch is missing."""
    try:
        import torch
    except ImportError as err:
        return {name: {"note": f"skipped: {err}"} for name in dtypes}
    from tvm_onednn.models import mobilenet_v2_torch

    x = torch.from_numpy(held_out)
    results: dict[str, dict] = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        model = mobilenet_v2_torch().to(dtype)
        with torch.no_grad():
            logits = [model(x[i : i + 50].to(dtype)).float() for i in range(0, len(x), 50)]
        results[name] = agreement(fp32, torch.cat(logits).numpy())
    return results


def _peer_missing(system: str) -> str | None:
    module = {"ort": "onnxruntime.quantization", "nncf": "nncf"}[system.split(":")[0]]
    try:
        __import__(module)
        if system.startswith("nncf"):
            __import__("openvino")
    except ImportError as err:
        return f"skipped: {err}"
    return None


def check_systems(systems: Iterable[str]) -> None:
    """Raise ValueError for a system that is not ``tvm-onednn:<mode>``, ``ort:minmax|entropy``
    or ``nncf:default|bias_correction``."""
    known = {*PEERS}
    bad = [s for s in systems if s not in known and not s.startswith(("tvm-onednn:",
                                                                       "tvm-onednn-control:"))]
    if bad:
        raise ValueError(f"unknown systems {bad}; known: tvm-onednn:<calib_mode>, "
                         f"tvm-onednn-control:<calib_mode>, {sorted(known)}")


def _evaluate(predict: Predict, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(predict(x[i : i + batch])) for i in range(0, len(x), batch)])


def run_systems(
    mod,
    onnx_bytes: bytes,
    calib: Sequence[np.ndarray],
    held_out: np.ndarray,
    batch: int,
    systems: Iterable[str],
    score: Callable[[np.ndarray], dict[str, float]],
    tmp: Path,
    validation: list | None = None,
) -> dict[str, dict]:
    """Quantize with every system on ``calib`` and score it on ``held_out``."""
    check_systems(systems)
    results: dict[str, dict] = {}
    for system in systems:
        kind, _, variant = system.partition(":")
        note = None if kind.startswith("tvm-onednn") else _peer_missing(system)
        if note:
            results[system] = {"note": note}
            continue
        start = time.perf_counter()
        try:
            control: dict = {}
            if kind == "tvm-onednn":
                predict = _tvm_system(variant, mod, calib)
            elif kind == "tvm-onednn-control":
                predict = _tvm_control_system(variant, mod, calib, validation, control)
            elif kind == "ort":
                predict = _ort_system(variant, onnx_bytes, calib, tmp)
            else:
                predict = _nncf_system(variant, onnx_bytes, calib, tmp)
        except Exception as err:  # noqa: BLE001 (a peer failing is a result, not a crash)
            results[system] = {"note": f"failed: {type(err).__name__}: {str(err)[:200]}"}
            continue
        quantize_s = time.perf_counter() - start
        results[system] = {**score(_evaluate(predict, held_out, batch)),
                           "quantize_seconds": round(quantize_s, 1)}  # fmt: skip
        if control:
            results[system]["accuracy_control"] = control
    return results


# --- models ---------------------------------------------------------------------------------


def mobilenet_protocol(
    n_calib: Sequence[int] = (10, 100),
    n_eval: int = 500,
    systems: Sequence[str] = (*(f"tvm-onednn:{m}" for m in TVM_MODES), *PEERS),
    photos: str = "all",
    calib_draws: int = 1,
    tmp: Path | None = None,
) -> dict:
    """MobileNetV2 (batch 1): agreement with float32 on ``n_eval`` held-out crops.

    For each ``N`` in ``n_calib`` and each of ``calib_draws`` calibration sets (seed
    ``[CALIB_SEED, N, draw]``), every system is calibrated on ``N`` crops and scored.
    """
    import tempfile

    from tvm_onednn.models import mobilenet_v2_onnx

    model = mobilenet_v2_onnx(batch=1)
    onnx_bytes = model.SerializeToString()
    mod = tvm_onednn.from_onnx(model)
    pool = source_photos(photos)
    held_out = crops(pool, n_eval, EVAL_SEED)
    dev = dev_set(pool, CONTROL_DEV_CROPS)
    assert_disjoint(dev, held_out)
    validation = [dev[i : i + 1] for i in range(len(dev))]
    fp32 = _evaluate(Runner(build(mod)), held_out, 1)
    out: dict = {"model": "mobilenet_v2", "photos": sorted(pool), "n_eval": n_eval,
                 "eval_seed": EVAL_SEED, "near_tie_fraction": near_tie_fraction(fp32),
                 "references": reference_precisions(held_out, fp32), "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=tmp) as tmpdir:
        for n in n_calib:
            for draw in range(calib_draws):
                seed = [CALIB_SEED, n, draw]
                calib_x = crops(pool, n, seed)
                assert_disjoint(calib_x, held_out)
                assert_disjoint(calib_x, dev)
                calib = [calib_x[i : i + 1] for i in range(n)]
                results = run_systems(mod, onnx_bytes, calib, held_out, 1, systems,
                                      lambda logits: agreement(fp32, logits), Path(tmpdir),
                                      validation)  # fmt: skip
                out["runs"].append({"n_calib": n, "calib_seed": seed, "results": results})
    return out


def digits_protocol(
    n_calib: Sequence[int] = (10, 100),
    systems: Sequence[str] = (*(f"tvm-onednn:{m}" for m in TVM_MODES), *PEERS),
    tmp: Path | None = None,
) -> dict:
    """The digits CNN of tests/quantize (batch 32): labelled top-1 on the 517 test digits.

    ``N`` calibration images are the first ``N`` training images, in batches of 32 (the last
    one filled up by repeating them).
    """
    import tempfile

    import onnx

    from tests.quantize import test_accuracy as digits

    systems = [s for s in systems if not s.startswith("tvm-onednn-control:")]  # MobileNet only
    x_train, y_train, x_test, y_test = digits._digits()
    assert_disjoint(x_train, x_test)
    onnx_bytes = digits._to_onnx(digits._train(x_train, y_train))
    mod = tvm_onednn.from_onnx(onnx.load_from_string(onnx_bytes))
    batch = digits.BATCH
    pad = (-len(x_test)) % batch
    x_eval = np.concatenate([x_test, np.repeat(x_test[:1], pad, axis=0)])

    def score(logits: np.ndarray) -> dict[str, float]:
        return {"top1": float(np.mean(logits[: len(y_test)].argmax(axis=1) == y_test))}

    fp32 = score(_evaluate(Runner(build(mod)), x_eval, batch))["top1"]
    out: dict = {"model": "digits_cnn", "n_eval": len(y_test), "fp32_top1": fp32, "runs": []}
    with tempfile.TemporaryDirectory(dir=tmp) as tmpdir:
        for n in n_calib:
            x = x_train[np.arange(-(-n // batch) * batch) % n]  # repeat to full batches
            calib = [x[i : i + batch] for i in range(0, len(x), batch)]
            results = run_systems(mod, onnx_bytes, calib, x_eval, batch, systems, score,
                                  Path(tmpdir))  # fmt: skip
            out["runs"].append({"n_calib": n, "results": results})
    return out


def cpu_isa() -> str:
    """oneDNN's ISA on this CPU (``avx512_core_amx``...), or ``unknown``."""
    try:
        from tvm_onednn._ffi_api import cpu_isa as isa

        return isa()
    except Exception as err:  # noqa: BLE001
        return f"unknown ({type(err).__name__})"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "tvm_onednn": tvm_onednn.__version__}
    for name in ("onnxruntime", "openvino", "nncf"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "not installed"
    return versions


def _table(block: dict, key: str) -> str:
    lines = []
    for name, r in block.get("references", {}).items():
        score = r.get("note") or f"{key} {r[key]:.3f}  top-5 {r['top5_agreement']:.3f}"
        lines.append(f"  reference: the whole model in {name:<9} {score}")
    for run in block["runs"]:
        for system, r in run["results"].items():
            if "note" in r:
                lines.append(f"  N={run['n_calib']:<4} {system:<26} {r['note']}")
                continue
            extra = f"  top-5 {r['top5_agreement']:.3f}" if "top5_agreement" in r else ""
            lines.append(f"  N={run['n_calib']:<4} {system:<26} {key} {r[key]:.3f}{extra}")
    return "\n".join(lines)


def _minilm_accuracy():
    """``benchmarks/minilm_accuracy.py`` (a sibling, also when this file is loaded by path)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import minilm_accuracy

    return minilm_accuracy


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-calib", default="10,100", help="calibration set sizes")
    parser.add_argument("--n-eval", type=int, default=500, help="held-out MobileNet crops")
    parser.add_argument("--calib-draws", type=int, default=1,
                        help="calibration sets (seeds) per size")  # fmt: skip
    parser.add_argument("--systems", default=",".join(
        (*(f"tvm-onednn:{m}" for m in TVM_MODES), "tvm-onednn-control:entropy", *PEERS)))  # fmt: skip
    parser.add_argument("--models", default="mobilenet_v2,digits,minilm")
    parser.add_argument("--minilm-n-calib", default="4,16",
                        help="MiniLM calibration rows (1-16; its own systems, see "
                             "benchmarks/minilm_accuracy.py)")  # fmt: skip
    parser.add_argument("--photos", choices=("all", "tests"), default="all")
    parser.add_argument("--out", default="bench-results/int8_accuracy.json")
    args = parser.parse_args(argv)
    n_calib = [int(v) for v in args.n_calib.split(",")]
    minilm_n_calib = [int(v) for v in args.minilm_n_calib.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    try:
        check_systems(systems)
    except ValueError as err:
        parser.error(str(err))
    report: dict = {"cpu_isa": cpu_isa(), "machine": platform.machine(),
                    "versions": _versions(), "models": {}}  # fmt: skip
    print(f"CPU ISA (oneDNN): {report['cpu_isa']}")
    for model in args.models.split(","):
        if model == "mobilenet_v2":
            block = mobilenet_protocol(n_calib, args.n_eval, systems, args.photos,
                                       args.calib_draws)  # fmt: skip
            print(f"mobilenet_v2: {args.n_eval} held-out crops of {len(block['photos'])} photos "
                  f"({block['near_tie_fraction']:.1%} near ties: float32's top-2 probabilities "
                  f"within {NEAR_TIE_MARGIN})")
            print(_table(block, "top1_agreement"))
        elif model == "digits":
            block = digits_protocol(n_calib, systems)
            print(f"digits_cnn: fp32 top-1 {block['fp32_top1']:.4f} on {block['n_eval']} digits")
            print(_table(block, "top1"))
        elif model == "minilm":
            minilm = _minilm_accuracy()
            block = minilm.minilm_protocol(minilm_n_calib)
            print(minilm.table(block))
        else:
            parser.error(f"unknown model {model!r}")
        report["models"][model] = block
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
