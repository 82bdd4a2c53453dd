"""The one ONNX loader: read and validate a model, fix its input shapes, import it into Relax.

Every problem with the model or the shapes asked for is a :class:`ModelImportError` (a
``ValueError``) with one sentence saying what does not fit. The command line
(``tvm_onednn.interface.io``) calls the same functions.

TVM 0.27's ONNX importer leaves shape arithmetic (``Shape`` -> ``Gather`` -> ``Concat`` ->
``Reshape``/``Slice``, ``Range``, ``ConstantOfShape``...) as run-time Relax computations;
on graphs exported with dynamic axes, or detection heads that derive anchors from feature
map sizes (YOLOv8), it then fails or produces tensors of unknown shape that neither TVM's
default pipeline nor ours can compile. At known static input shapes all of that is
constant: :func:`fold_shapes` folds it with onnxruntime's basic graph optimizer (constant
folding and redundant-node elimination; its operator fusions are switched off) and
:func:`from_onnx` does so when the plain import fails or leaves shapes unknown.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import numbers
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx
import tvm

log = logging.getLogger("tvm_onednn.frontend")

#: ONNX ops that compute or consume shapes at run time: their presence is what folding is for.
SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "Range"})

# onnxruntime's level-1 transformers that fuse operators rather than fold constants or drop
# redundant nodes. They are numerically harmless, but they change the graph's form for no
# gain here (our own passes fold BatchNorm and biases): switched off so that folding only
# folds.
_ORT_FUSIONS = (
    "ConvAddFusion",
    "ConvBNFusion",
    "ConvMulFusion",
    "PadFusion",
    "MatMulAddFusion",
    "MatmulBNFusion",
    "DivMulFusion",
    "FuseReluClip",
    "GemmTransposeFusion",
    "NotWhereFusion",
    "QDQPropagationTransformer",
    "QDQS8ToU8Transformer",
    "DoubleQDQPairsRemover",
    "WeightBiasQuantization",
)
_STANDARD_DOMAINS = ("", "ai.onnx")


class ModelImportError(ValueError):
    """The model cannot be imported (missing file, unknown input, dynamic shape...).

    For a dynamic input dim without a given shape, ``input_name``, ``dims`` (as declared)
    and ``example`` (a static shape to suggest) are set, so callers can phrase the fix in
    their own terms (the command line says ``--input-shapes``).
    """

    def __init__(self, message: str, *, input_name=None, dims=None, example=None):
        super().__init__(message)
        self.input_name = input_name
        self.dims = dims
        self.example = example


@dataclass(frozen=True)
class TensorSpec:
    """One model input: name, static shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping) -> TensorSpec:
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))


# --------------------------------------------------------------------------- loading


def load_model(model: onnx.ModelProto | str | os.PathLike | bytes) -> onnx.ModelProto:
    """An ONNX model from a path (or serialized bytes, or a model, returned as is)."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model))
        except Exception as err:  # noqa: BLE001  (onnx raises DecodeError and friends)
            raise ModelImportError(f"the bytes given are not an ONNX model: {err}") from None
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ModelImportError(f"no ONNX model at {path!r}")
    try:
        loaded = onnx.load(path)
    except Exception as err:  # noqa: BLE001
        raise ModelImportError(f"{path!r} is not a readable ONNX model: {err}") from None
    if not loaded.graph.node and not loaded.graph.output:
        # protobuf parses many non-ONNX files (e.g. empty or text ones) as an empty model
        raise ModelImportError(f"{path!r} is not a readable ONNX model: it holds no graph")
    return loaded


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """The graph inputs (initializers excluded) with their declared dims (a name or "?")."""
    initializers = {init.name for init in model.graph.initializer}
    shapes = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [
            d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims
        ]
    return shapes


def _dtype(elem_type: int) -> str:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001  (undefined or exotic element types)
        return "float32"


def _static_dim(d) -> bool:
    return isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0


def model_inputs(
    model: onnx.ModelProto, shape_dict: Mapping[str, Sequence[int]] | None = None
) -> list[TensorSpec]:
    """The model's inputs with ``shape_dict`` applied, all static, in graph order.

    Unknown names, a rank that differs from the declared one and a dim left dynamic raise
    :class:`ModelImportError`.
    """
    declared = input_shapes(model)
    shape_dict = dict(shape_dict or {})
    unknown = sorted(set(shape_dict) - set(declared))
    if unknown:
        raise ModelImportError(
            f"unknown input name(s) {unknown}; the model's inputs are {sorted(declared)}"
        )
    elem_types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    specs = []
    for name, dims in declared.items():
        given = name in shape_dict
        shape = list(shape_dict.get(name, dims))
        if given and len(shape) != len(dims):
            raise ModelImportError(
                f"input {name!r} has rank {len(dims)} ({dims}), got shape {shape}"
            )
        if not all(_static_dim(d) for d in shape):
            example = [int(d) if _static_dim(d) else 1 for d in shape]
            what = "a non-static shape" if given else "a dynamic shape"
            raise ModelImportError(
                f"input {name!r} has {what} {shape}; give a static one, e.g. "
                f"shape_dict={{{name!r}: {example}}}",
                input_name=name,
                dims=shape,
                example=example,
            )
        specs.append(TensorSpec(name, tuple(int(d) for d in shape), _dtype(elem_types[name])))
    return specs


# --------------------------------------------------------------------------- folding


@dataclass
class FoldReport:
    """What :func:`fold_shapes` changed: node counts by op type, removed and added."""

    shapes: dict[str, list[int]]
    removed: collections.Counter = field(default_factory=collections.Counter)
    added: collections.Counter = field(default_factory=collections.Counter)

    @property
    def num_removed(self) -> int:
        return sum(self.removed.values())

    def __str__(self) -> str:
        def fmt(counts):
            return ", ".join(f"{op} x{n}" for op, n in counts.most_common())

        shape_nodes = sum(n for op, n in self.removed.items() if op in SHAPE_OPS)
        text = (
            f"folded {self.num_removed} nodes ({fmt(self.removed) or 'none'}; "
            f"{shape_nodes} of them {'/'.join(sorted(SHAPE_OPS))}) at input shapes {self.shapes}"
        )
        if self.added:
            text += f"; added {fmt(self.added)}"
        return text


def _with_static_inputs(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]):
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    # Shapes recorded for intermediate values may name the old symbolic dims: let the
    # optimizer infer them again at the static shapes.
    del fixed.graph.value_info[:]
    return fixed


def fold_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]
) -> tuple[onnx.ModelProto, FoldReport]:
    """The model with everything computable at these static input shapes folded to constants.

    Uses onnxruntime's basic graph optimizer (constant folding, redundant-node elimination;
    fusions off), run in a temporary directory. Raises :class:`ModelImportError` when
    onnxruntime is missing, rejects the model, or its result holds non-standard ops.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelImportError(
            "folding shape computations needs onnxruntime (pip install onnxruntime)"
        ) from None
    shapes = {k: [int(d) for d in v] for k, v in shapes.items()}
    fixed = _with_static_inputs(model, shapes)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="tvm_onednn_fold_") as tmp:
        source = os.path.join(tmp, "model.onnx")
        options.optimized_model_filepath = os.path.join(tmp, "folded.onnx")
        large = fixed.ByteSize() > 1_800_000_000
        onnx.save(fixed, source, save_as_external_data=large)
        if large:
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", "folded.data"
            )
        try:
            ort.InferenceSession(
                source, options, providers=["CPUExecutionProvider"],
                disabled_optimizers=list(_ORT_FUSIONS),
            )  # fmt: skip
            folded = onnx.load(options.optimized_model_filepath)
        except Exception as err:  # noqa: BLE001  (onnxruntime's errors are RuntimeErrors)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelImportError(f"onnxruntime could not fold the model: {first}") from None
    foreign = sorted(
        {f"{n.domain}::{n.op_type}" for n in folded.graph.node if n.domain not in _STANDARD_DOMAINS}
    )
    if foreign:
        raise ModelImportError(f"folding produced non-standard ops {foreign}")
    used = {n.domain for n in folded.graph.node} | {""}
    kept = [o for o in folded.opset_import if o.domain in used]
    del folded.opset_import[:]
    folded.opset_import.extend(kept)
    # Constant nodes become initializers either way: not counted as folded.
    before = collections.Counter(n.op_type for n in model.graph.node if n.op_type != "Constant")
    after = collections.Counter(n.op_type for n in folded.graph.node if n.op_type != "Constant")
    return folded, FoldReport(shapes, before - after, after - before)


# --------------------------------------------------------------------------- import


def _dynamic_values(mod: tvm.IRModule) -> int:
    """How many values of ``main`` have a shape that is not fully known (or are MatchCast)."""
    from tvm import relax, tirx

    def dynamic(ty) -> bool:
        if isinstance(ty, relax.TensorType):
            shape = ty.shape
            if shape is None or not isinstance(shape, relax.ShapeExpr):
                return True
            return not all(isinstance(d, tirx.IntImm) for d in shape.values)
        if isinstance(ty, relax.TupleType):
            return any(dynamic(f) for f in ty.fields)
        return False

    count = 0
    func = mod["main"]
    for block in getattr(func.body, "blocks", []):
        for binding in block.bindings:
            if isinstance(binding, relax.MatchCast) or dynamic(binding.var.ty):
                count += 1
    return count + int(dynamic(func.ret_ty))


def _import(model: onnx.ModelProto, specs: Sequence[TensorSpec], quiet=False) -> tvm.IRModule:
    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

    shape_dict = {s.name: list(s.shape) for s in specs}
    if not quiet:
        return relax_from_onnx(model, shape_dict=shape_dict, keep_params_in_input=False)
    # TVM prints "Error converting operator ..." before raising: when folding may still
    # rescue the model, that goes to the debug log instead of stdout.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return relax_from_onnx(model, shape_dict=shape_dict, keep_params_in_input=False)
    finally:
        if printed.getvalue().strip():
            log.debug("TVM's ONNX importer printed: %s", printed.getvalue().strip())


def _why(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


def from_onnx(
    model: onnx.ModelProto | str | os.PathLike | bytes,
    shape_dict: Mapping[str, Sequence[int]] | None = None,
    *,
    fold: bool | str = "auto",
) -> tvm.IRModule:
    """Import an ONNX model (object, path or bytes) as a Relax module with static input shapes.

    ``shape_dict`` overrides input shapes (e.g. a batch size); every input must end up
    fully static, otherwise a :class:`ModelImportError` names the input and its dims.

    ``fold``: ``"auto"`` (default) imports the model as it is and keeps that result when it
    is fully static; if TVM's importer fails or leaves values of unknown shape, the shape
    computations are folded at the static input shapes (:func:`fold_shapes`) and the folded
    graph is imported instead (logged at INFO on ``tvm_onednn.frontend``). ``True`` folds
    first, ``False`` never folds. Every failure is a :class:`ModelImportError`.
    """
    if fold not in ("auto", True, False):
        raise ValueError(f"fold must be 'auto', True or False, got {fold!r}")
    model = load_model(model)
    specs = model_inputs(model, shape_dict)
    shapes = {s.name: list(s.shape) for s in specs}

    plain, plain_err, plain_dynamic = None, None, 0
    if fold is not True:
        try:
            plain = _import(model, specs, quiet=fold == "auto")
        except Exception as err:  # noqa: BLE001  (TVM raises anything: TVMError, KeyError...)
            plain_err = err
        else:
            plain_dynamic = _dynamic_values(plain)
            if plain_dynamic == 0 or fold is False:
                return plain
        if plain_err is not None and fold is False:
            raise ModelImportError(
                f"TVM's ONNX importer failed: {_why(plain_err)}"
            ) from plain_err
        reason = (
            f"TVM's ONNX importer failed ({_why(plain_err)})"
            if plain_err is not None
            else f"the import left {plain_dynamic} value(s) of unknown shape"
        )
        log.info("%s; folding shape computations at input shapes %s", reason, shapes)

    try:
        folded, report = fold_shapes(model, shapes)
        mod = _import(folded, specs, quiet=plain is not None)
    except Exception as err:  # noqa: BLE001
        why = str(err) if isinstance(err, ModelImportError) else _why(err)
        if plain is not None:
            log.warning("folding did not help (%s); keeping the plain import", why)
            return plain
        if plain_err is not None:
            raise ModelImportError(
                f"TVM's ONNX importer failed: {_why(plain_err)} (after folding shape "
                f"computations: {why})"
            ) from plain_err
        raise ModelImportError(f"TVM's ONNX importer failed after folding: {why}") from err
    dynamic = _dynamic_values(mod)
    if plain is not None and dynamic >= plain_dynamic:
        log.warning(
            "folding left %d value(s) of unknown shape (%d before); keeping the plain import",
            dynamic, plain_dynamic,
        )  # fmt: skip
        return plain
    log.info("%s", report)
    if dynamic:
        log.warning("after folding, %d value(s) still have an unknown shape", dynamic)
    return mod
