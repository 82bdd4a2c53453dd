"""Files and strings the command line reads: input shapes, ``.npz`` inputs, calibration data.

Everything here validates what a user typed or pointed at and raises :class:`InputError`
(a ``ValueError``) with one clear sentence when it does not fit. ONNX models are read,
checked and imported by :mod:`tvm_onednn.frontend` (the one loader); its
:class:`~tvm_onednn.frontend.ModelImportError` becomes an :class:`InputError` here, with
fixes phrased as command-line flags.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from .. import frontend
from ..frontend import Dim, ModelImportError, TensorSpec, is_static_dim

class InputError(ValueError):
    """A file, name, shape or option given by the user does not fit the model."""


# --------------------------------------------------------------------------- shapes


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``"data:1,3,224,224"`` -> ``("data", [1, 3, 224, 224])``.

    The name is everything before the last ``:`` (ONNX names may contain colons); dims
    are positive integers separated by commas (``x`` is accepted too).
    """
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise InputError(
            f"bad input shape {text!r}: expected NAME:DIM,DIM,... such as data:1,3,224,224"
        )
    parts = dims.replace("x", ",").split(",")
    try:
        shape = [int(p) for p in parts]
    except ValueError:
        raise InputError(
            f"bad input shape {text!r}: dims must be positive integers, got {dims!r}"
        ) from None
    if any(d < 1 for d in shape):
        raise InputError(f"bad input shape {text!r}: dims must be positive integers")
    return name, shape


def parse_input_shapes(texts: Sequence[str] | None) -> dict[str, list[int]]:
    """Several ``NAME:DIMS`` strings; a name given twice is an error."""
    shapes: dict[str, list[int]] = {}
    for text in texts or ():
        name, shape = parse_input_shape(text)
        if name in shapes:
            raise InputError(f"input {name!r} is given twice in --input-shapes")
        shapes[name] = shape
    return shapes


# --------------------------------------------------------------------------- symbolic dims


def format_shape(shape: Sequence[Dim]) -> str:
    """``("batch", 3, 224, 224)`` -> ``"[batch, 3, 224, 224]"``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def symbolic_dims(specs: Sequence[TensorSpec]) -> list[str]:
    """Names of the free dims of ``specs``, in order of first appearance."""
    return list(dict.fromkeys(str(d) for s in specs for d in s.shape if not is_static_dim(d)))


def bind_shape(
    shape: Sequence[int], spec: TensorSpec, bound: dict[str, int], source: str
) -> None:
    """Check ``shape`` against ``spec``; a free dim takes any size, the same size everywhere.

    ``bound`` maps the free dims seen so far to their sizes and is updated. Raises
    :class:`InputError` naming the first dim that does not fit.
    """
    expected = format_shape(spec.shape)
    if len(shape) != len(spec.shape):
        raise InputError(
            f"{source}: input {spec.name!r} has shape {list(shape)} (rank {len(shape)}), the "
            f"model expects {expected} (rank {len(spec.shape)})"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape)):
        if is_static_dim(want):
            if got != want:
                raise InputError(
                    f"{source}: input {spec.name!r} has shape {list(shape)}, the model expects "
                    f"{expected}: dim {axis} must be {want}, got {got}"
                )
            continue
        name = str(want)
        if got < 1:
            raise InputError(
                f"{source}: input {spec.name!r} has shape {list(shape)}: dim {axis} ({name}) "
                "must be >= 1"
            )
        if bound.setdefault(name, got) != got:
            raise InputError(
                f"{source}: input {spec.name!r} has {name}={got} (dim {axis}), another input "
                f"has {name}={bound[name]}; the model expects one {name} for all inputs"
            )


def concrete_shapes(
    specs: Sequence[TensorSpec], batch: int | None = None, source: str = "the model"
) -> dict[str, list[int]]:
    """Static shapes for ``specs``: the leading dim set to ``batch`` (when given).

    A static leading dim must already equal ``batch``; a free dim other than the batch
    cannot be guessed and raises :class:`InputError`.
    """
    if batch is not None and batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    shapes = {}
    for s in specs:
        shape = list(s.shape)
        if batch is not None and shape:
            if is_static_dim(shape[0]) and shape[0] != batch:
                raise InputError(
                    f"{source} takes input {s.name!r} of shape {format_shape(s.shape)} only "
                    f"(batch {shape[0]}, compiled without a free batch dim); batch {batch} "
                    "needs a library compiled with a dynamic batch (compile without "
                    "--input-shapes, from a model with a dynamic batch axis)"
                )
            shape[0] = batch
        free = [str(d) for d in shape if not is_static_dim(d)]
        if free:
            raise InputError(
                f"{source}: input {s.name!r} has free dim(s) {free} ({format_shape(s.shape)}); "
                "give static shapes"
            )
        shapes[s.name] = [int(d) for d in shape]
    return shapes


def require_static(specs: Sequence[TensorSpec], what: str) -> None:
    """Raise :class:`InputError` when a spec has a free dim: ``what`` needs static shapes."""
    for s in specs:
        free = [str(d) for d in s.shape if not is_static_dim(d)]
        if free:
            example = ",".join(str(d) if is_static_dim(d) else "1" for d in s.shape)
            raise InputError(
                f"{what} needs static shapes: input {s.name!r} has free dim(s) {free} "
                f"({format_shape(s.shape)}); give them, e.g. --input-shapes {s.name}:{example}"
            )


def dynamic_batch(model: onnx.ModelProto, name: str = "batch") -> onnx.ModelProto:
    """A copy of ``model`` whose inputs' and outputs' leading dim is the symbol ``name``.

    For models exported at a fixed batch whose graph does not depend on it (no reshape to
    a constant batch). Recorded intermediate shapes are dropped: they name the old batch.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    initializers = {init.name for init in out.graph.initializer}
    for value in [*out.graph.input, *out.graph.output]:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = name
    del out.graph.value_info[:]
    return out


# --------------------------------------------------------------------------- models


def as_input_error(err: ModelImportError) -> InputError:
    """The frontend's error in command-line terms (a dynamic dim asks for --input-shapes)."""
    if err.input_name is not None and err.example is not None:
        example = ",".join(str(d) for d in err.example)
        return InputError(
            f"input {err.input_name!r} has a dynamic shape {err.dims}; give a static one, "
            f"e.g. --input-shapes {err.input_name}:{example}"
        )
    return InputError(str(err))


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file, with a clear error for a missing or unreadable one."""
    try:
        return frontend.load_model(os.fspath(path))
    except ModelImportError as err:
        raise as_input_error(err) from None


def model_inputs(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None
) -> list[TensorSpec]:
    """The model's inputs with ``shapes`` applied; unknown names and dynamic dims raise."""
    try:
        return frontend.model_inputs(model, shapes)
    except ModelImportError as err:
        raise as_input_error(err) from None


def import_model(path: str | os.PathLike, shapes: Mapping[str, Sequence[int]] | None = None):
    """ONNX file -> (Relax module, input specs), every error an :class:`InputError`.

    Dims the model leaves free (a dynamic batch axis) stay free unless ``shapes`` fixes
    them; shape computations are folded when TVM's importer needs it
    (``frontend.from_onnx``).
    """
    try:
        model = frontend.load_model(os.fspath(path))
        specs = frontend.model_inputs(model, shapes)
        mod = frontend.from_onnx(model, dict(shapes or {}))
    except ModelImportError as err:
        raise as_input_error(err) from None
    return mod, specs


def random_inputs(
    specs: Sequence[TensorSpec],
    seed: int = 0,
    batch: int | None = None,
    source: str = "the model",
) -> dict[str, np.ndarray]:
    """Standard-normal floats (zeros for integer inputs) of the given specs, at ``batch``
    (see :func:`concrete_shapes`; ``source`` names the model in its errors)."""
    rng = np.random.default_rng(seed)
    shapes = concrete_shapes(specs, batch, source)
    out = {}
    for s in specs:
        if np.issubdtype(np.dtype(s.dtype), np.floating):
            out[s.name] = rng.standard_normal(shapes[s.name]).astype(s.dtype)
        else:
            out[s.name] = np.zeros(shapes[s.name], dtype=s.dtype)
    return out


# --------------------------------------------------------------------------- npz


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (or a single ``.npy``, keyed by its file stem)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"no such file: {path!r}")
    try:
        if path.endswith(".npy"):
            return {Path(path).stem: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InputError(f"{path!r} is a single array; inputs are an .npz keyed by name")
            return {k: data[k] for k in data.files}
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{path!r} is not a readable .npz/.npy file: {err}") from None


def match_inputs(
    arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], source: str
) -> list[np.ndarray]:
    """``arrays`` in the order of ``specs``, checked for names, shapes and dtypes.

    A free dim of a spec (e.g. ``batch``) takes any size, the same in every input. A single
    unnamed-looking array (``arr_0``) is accepted for a single-input model.
    """
    names = [s.name for s in specs]
    arrays = dict(arrays)
    if len(specs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        (key,) = arrays
        if key.startswith("arr_"):
            arrays = {names[0]: arrays[key]}
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise InputError(
            f"{source}: unknown input name(s) {unknown}; the model's inputs are {names}"
        )
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"{source}: missing input(s) {missing}; the model's inputs are {names}")
    out = []
    bound: dict[str, int] = {}
    for s in specs:
        arr = np.asarray(arrays[s.name])
        bind_shape(arr.shape, s, bound, source)
        if arr.dtype != np.dtype(s.dtype):
            if np.can_cast(arr.dtype, s.dtype, casting="same_kind"):
                arr = arr.astype(s.dtype)
            else:
                raise InputError(
                    f"{source}: input {s.name!r} is {arr.dtype}, the model expects {s.dtype}"
                )
        out.append(np.ascontiguousarray(arr))
    return out


# --------------------------------------------------------------------------- calibration


def _calibration_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
        if not files:
            raise InputError(f"calibration directory {str(path)!r} holds no .npy/.npz files")
        return files
    raise InputError(f"no calibration data at {str(path)!r}")


def load_calibration_samples(
    path: str | os.PathLike, specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """Calibration samples per input, ``{name: [n_samples, *sample_shape]}``.

    ``path`` is an ``.npz`` keyed by input name whose arrays have a leading sample axis
    (an ``.npy`` for a single-input model), or a directory of such files, concatenated in
    name order. The sample shape must be the model input's shape without its batch dim
    (a free dim there takes any size).
    """
    files = _calibration_files(Path(path))
    names = [s.name for s in specs]
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for file in files:
        arrays = load_npz(file)
        if file.suffix == ".npy":
            if len(specs) != 1:
                raise InputError(
                    f"{str(file)!r}: a .npy file only serves a single-input model; the model has "
                    f"inputs {names}: use an .npz keyed by input name"
                )
            arrays = {names[0]: next(iter(arrays.values()))}
        unknown = sorted(set(arrays) - set(names))
        missing = [n for n in names if n not in arrays]
        if unknown or missing:
            raise InputError(
                f"calibration file {str(file)!r} has arrays {sorted(arrays)}; the model's inputs "
                f"are {names}"
            )
        for s in specs:
            arr = np.asarray(arrays[s.name])
            fits = arr.ndim == len(s.shape) and all(
                got == want or not is_static_dim(want)
                for got, want in zip(arr.shape[1:], s.shape[1:])
            )
            if not fits:
                raise InputError(
                    f"calibration file {str(file)!r}: {s.name!r} has shape {list(arr.shape)}; "
                    f"expected [N, {', '.join(map(str, s.shape[1:]))}] (N samples of the model "
                    f"input {format_shape(s.shape)})"
                )
            if not np.issubdtype(arr.dtype, np.number):
                raise InputError(f"calibration file {str(file)!r}: {s.name!r} is {arr.dtype}")
            chunks[s.name].append(arr.astype(s.dtype, copy=False))
    samples = {n: np.concatenate(c, axis=0) for n, c in chunks.items()}
    counts = {n: len(a) for n, a in samples.items()}
    if len(set(counts.values())) != 1:
        raise InputError(f"calibration inputs have different sample counts: {counts}")
    return samples


#: Samples per calibration batch when the model's batch dim is free (any size runs).
CALIB_BATCH = 8


def calibration_batches(
    samples: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> list[dict[str, np.ndarray]]:
    """Split samples into batches: of the model's batch size when it is static, else of
    :data:`CALIB_BATCH`; the last batch holds the rest. Every sample is used: the quantizer
    fills a short last batch of a static-batch model with the first samples again."""
    total = len(next(iter(samples.values())))
    if total == 0:
        raise InputError("calibration data holds 0 samples")
    lead = specs[0].shape[0] if specs[0].shape else None
    size = int(lead) if is_static_dim(lead) else CALIB_BATCH
    return [
        {n: np.ascontiguousarray(a[i : i + size]) for n, a in samples.items()}
        for i in range(0, total, size)
    ]
