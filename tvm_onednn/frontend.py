"""The one ONNX loader: read and validate a model, set its input shapes, import it into Relax.

Every problem with the model or the shapes asked for is a :class:`ModelImportError` (a
``ValueError``) with one sentence saying what does not fit. The command line
(``tvm_onednn.interface.io``) calls the same functions.

Dynamic axes stay dynamic: a free input dim (``dim_param`` or unnamed) becomes a symbolic
``int64`` TIR variable of the Relax module, named after the ``dim_param``
(:func:`model_inputs` gives the names); a ``shape_dict`` fixes any of them.

TVM 0.27's ONNX importer leaves shape arithmetic (``Shape`` -> ``Gather`` -> ``Concat`` ->
``Reshape``/``Slice``, ``Range``, ``ConstantOfShape``...) as run-time Relax computations;
on graphs exported with dynamic axes, or detection heads that derive anchors from feature
map sizes (YOLOv8), it then fails or produces tensors of unknown shape that neither TVM's
default pipeline nor ours can compile. :func:`from_onnx` then tries, in turn, the graph
constant-folded by onnxruntime's basic optimizer at the input shapes (:func:`fold_shapes`:
everything that does not depend on a free dim; fusions off) and exact rewrites of the
patterns TVM mishandles (:func:`rewrite_for_tvm`), and logs what it folded or rewrote.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import logging
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import tvm
from onnx import helper, numpy_helper

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
_FOLD_ROUNDS = 4  # onnxruntime passes at most in fold_shapes


class ModelImportError(ValueError):
    """The model cannot be imported (missing file, unknown input, bad shape...).

    For an input dim left free where a static one is required (``model_inputs(...,
    require_static=True)``), ``input_name``, ``dims`` (as declared) and ``example`` (a
    static shape to suggest) are set, so callers can phrase the fix in their own terms (the
    command line says ``--input-shapes``).
    """

    def __init__(self, message: str, *, input_name=None, dims=None, example=None):
        super().__init__(message)
        self.input_name = input_name
        self.dims = dims
        self.example = example


#: A dim of an input: a static size, or the name of a free (symbolic) dim such as "batch".
Dim = int | str


def is_static_dim(dim: object) -> bool:
    """Whether ``dim`` is a fixed size (a positive integer) rather than a symbol."""
    return isinstance(dim, numbers.Integral) and not isinstance(dim, bool) and dim > 0


@dataclass(frozen=True)
class TensorSpec:
    """One model input: name, shape and dtype.

    A dim of ``shape`` is an ``int`` (static) or a ``str``: the name of a free dim, the same
    name as the symbolic variable of the imported Relax module (e.g. ``"batch"``). Inputs
    sharing a name share the size.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(is_static_dim(d) for d in self.shape)

    @property
    def free_dims(self) -> tuple[str, ...]:
        """Names of the free dims, in order (each once)."""
        return tuple(dict.fromkeys(d for d in self.shape if not is_static_dim(d)))

    def concrete(self, sizes: Mapping[str, int] | None = None, /, **named: int) -> TensorSpec:
        """This spec with free dims set from ``sizes`` / keywords (names it lacks are ignored,
        so one mapping serves every input). A free dim left unset or a size < 1 raises."""
        sizes = {**(sizes or {}), **named}
        for dim, size in sizes.items():
            if not is_static_dim(size):
                raise ModelImportError(f"dim {dim!r} must be a positive integer, got {size!r}")
        missing = [d for d in self.free_dims if d not in sizes]
        if missing:
            raise ModelImportError(
                f"input {self.name!r} has free dim(s) {missing} ({_fmt(self.shape)}); "
                f"give their sizes, e.g. concrete({', '.join(f'{d}=1' for d in missing)})"
            )
        shape = tuple(d if is_static_dim(d) else int(sizes[d]) for d in self.shape)
        return TensorSpec(self.name, shape, self.dtype)

    def with_batch(self, batch: int) -> TensorSpec:
        """This spec with the leading dim set to ``batch`` (a static one must already be it)."""
        if not is_static_dim(batch):
            raise ModelImportError(f"batch must be a positive integer, got {batch!r}")
        if not self.shape:
            raise ModelImportError(f"input {self.name!r} is a scalar: it has no batch dim")
        lead = self.shape[0]
        if is_static_dim(lead) and lead != batch:
            raise ModelImportError(
                f"input {self.name!r} has a static batch of {lead} ({_fmt(self.shape)}), "
                f"not {batch}"
            )
        return TensorSpec(self.name, (int(batch), *self.shape[1:]), self.dtype)

    def as_dict(self) -> dict:
        shape = [int(d) if is_static_dim(d) else str(d) for d in self.shape]
        return {"name": self.name, "shape": shape, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping) -> TensorSpec:
        shape = tuple(x if isinstance(x, str) else int(x) for x in d["shape"])
        return cls(str(d["name"]), shape, str(d["dtype"]))


def _fmt(shape: Sequence) -> str:
    """``("batch", 3)`` -> ``"[batch, 3]"``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


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


def _identifier(text: str) -> str:
    """``text`` as a variable name: ASCII letters, digits and ``_``, not starting with a digit."""
    name = re.sub(r"\W", "_", text, flags=re.ASCII)
    return name if name and not name[0].isdigit() else f"d_{name}"


def _free_dim_names(model: onnx.ModelProto) -> dict[tuple[str, int], str]:
    """A variable name for every free input dim, keyed by (input, axis).

    A named dim (``dim_param``) keeps its name, made an identifier; dims of the same name
    share it, different names stay different. An unnamed dim (no ``dim_param``, ``"?"`` or
    a size < 1) gets ``<input>_dim<axis>``.
    """
    names: dict[tuple[str, int], str] = {}
    by_param: dict[str, str] = {}
    taken: set[str] = set()

    def unique(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    for value, dims in input_shapes(model).items():
        for axis, dim in enumerate(dims):
            if is_static_dim(dim):
                continue
            if isinstance(dim, str) and dim not in ("", "?"):
                if dim not in by_param:
                    by_param[dim] = unique(_identifier(dim))
                names[value, axis] = by_param[dim]
            else:
                names[value, axis] = unique(f"{_identifier(value)}_dim{axis}")
    return names


def _given_shape(name: str, dims: list, given: Sequence) -> list[Dim]:
    """A ``shape_dict`` entry checked against the declared dims: sizes > 0 or dim names."""
    shape = list(given)
    if len(shape) != len(dims):
        raise ModelImportError(f"input {name!r} has rank {len(dims)} ({dims}), got shape {shape}")
    out: list[Dim] = []
    for axis, d in enumerate(shape):
        if is_static_dim(d):
            out.append(int(d))
        elif isinstance(d, str) and d.strip():
            out.append(_identifier(d.strip()))
        else:
            raise ModelImportError(
                f"input {name!r} got shape {shape}: dim {axis} must be a positive size or a "
                f"dim name, got {d!r}"
            )
    return out


def model_inputs(
    model: onnx.ModelProto,
    shape_dict: Mapping[str, Sequence[int | str]] | None = None,
    *,
    require_static: bool = False,
) -> list[TensorSpec]:
    """The model's inputs with ``shape_dict`` applied, in graph order.

    A dim the model leaves free stays free (named as in :func:`_free_dim_names`) unless
    ``shape_dict`` fixes it. A ``shape_dict`` entry gives an input's whole shape, each dim a
    size or a name (a name frees the dim, or ties dims together). Fixing a named dim in one
    input fixes it in the inputs not given (same name, same size). Unknown input names,
    wrong ranks, sizes < 1 and one dim fixed to two sizes raise :class:`ModelImportError`;
    so does a free dim when ``require_static``.
    """
    declared = input_shapes(model)
    shape_dict = dict(shape_dict or {})
    unknown = sorted(set(shape_dict) - set(declared))
    if unknown:
        raise ModelImportError(
            f"unknown input name(s) {unknown}; the model's inputs are {sorted(declared)}"
        )
    free = _free_dim_names(model)
    shapes = {
        name: (
            _given_shape(name, dims, shape_dict[name])
            if name in shape_dict
            else [d if is_static_dim(d) else free[name, axis] for axis, d in enumerate(dims)]
        )
        for name, dims in declared.items()
    }
    # a named dim fixed in a given input is fixed wherever it appears in the other inputs
    fixed: dict[str, tuple[int, str]] = {}
    for name, shape in shapes.items():
        if name not in shape_dict:
            continue
        for axis, size in enumerate(shape):
            symbol = free.get((name, axis))
            if symbol is None or not is_static_dim(size):
                continue
            size0, name0 = fixed.setdefault(symbol, (size, name))
            if size0 != size:
                raise ModelImportError(
                    f"dim {symbol!r} is {size0} in input {name0!r} but {size} in input "
                    f"{name!r}; inputs sharing a dim must agree on its size"
                )
    for name, shape in shapes.items():
        if name not in shape_dict:
            shapes[name] = [fixed[d][0] if d in fixed else d for d in shape]

    elem_types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    specs = [TensorSpec(n, tuple(s), _dtype(elem_types[n])) for n, s in shapes.items()]
    for spec in specs if require_static else ():
        if not spec.is_static:
            dims = declared[spec.name] if spec.name not in shape_dict else list(spec.shape)
            example = [d if is_static_dim(d) else 1 for d in spec.shape]
            raise ModelImportError(
                f"input {spec.name!r} has a dynamic shape {dims}; give a static one, e.g. "
                f"shape_dict={{{spec.name!r}: {example}}}",
                input_name=spec.name,
                dims=dims,
                example=example,
            )
    return specs


# --------------------------------------------------------------------------- folding


@dataclass
class FoldReport:
    """What :func:`fold_shapes` changed: node counts by op type, removed and added."""

    shapes: dict[str, list[Dim]]
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


def _with_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[Dim]]):
    """A copy of ``model`` whose inputs named in ``shapes`` have those dims (sizes or names)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in out.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name], strict=True):
                dim.Clear()
                if is_static_dim(size):
                    dim.dim_value = int(size)
                else:
                    dim.dim_param = str(size)
    # Shapes recorded for intermediate values may name the old dims: let the optimizer
    # infer them again from the inputs.
    del out.graph.value_info[:]
    return out


def _shape_dims_read(
    model: onnx.ModelProto,
) -> list[tuple[onnx.NodeProto, str, slice, np.ndarray]]:
    """``(gather, x, dims, k)`` for each ``Gather(Shape(x), k)`` with a constant ``k``:
    the node reads ``x``'s dims ``[dims][k]`` (``dims``: ``Shape``'s ``start``/``end``)."""
    constants = _constants(model.graph)
    producers = {out: node for node in model.graph.node for out in node.output}
    reads = []
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) != 2 or node.input[1] not in constants:
            continue
        shape = producers.get(node.input[0])
        if shape is None or shape.op_type != "Shape":
            continue
        attrs = {a.name: a.i for a in shape.attribute}
        dims = slice(attrs.get("start", 0), attrs.get("end"))
        reads.append((node, shape.input[0], dims, constants[node.input[1]].astype(np.int64)))
    return reads


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` with shapes inferred by ONNX (with data propagation); None if it fails.

    onnxruntime's symbolic inference is not used: when it cannot infer every shape it saves
    ``sym_shape_infer_temp.onnx`` and its weights into the caller's working directory.
    """
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  (an invalid graph: onnxruntime will say what is wrong)
        return None


def _fold_static_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Gather(Shape(x), k)`` made a constant where ONNX shape inference knows that dim.

    onnxruntime folds a ``Shape`` only when every dim is known; with a free batch, the
    channel or spatial dims that detection heads read (for ``Slice`` bounds, anchors) stay
    run-time values. The dims replaced are known sizes, so this is exact. Returns ``model``
    itself when nothing changes.
    """
    reads = _shape_dims_read(model)
    if not reads:
        return model
    inferred = _infer_shapes(model)
    if inferred is None:
        return model
    dims = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input]:
        if value.type.tensor_type.HasField("shape"):
            dims[value.name] = [
                d.dim_value if d.HasField("dim_value") else 0
                for d in value.type.tensor_type.shape.dim
            ]
    sizes = {}
    for gather, x, selected, index in reads:
        known = np.array(dims.get(x, [])[selected], dtype=np.int64)
        if known.size and np.all((-known.size <= index) & (index < known.size)):
            values = known[index]
            if np.all(values > 0):
                sizes[gather.output[0]] = values
    if not sizes:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(
        _constant_node(n.output[0], sizes[n.output[0]], n.name)
        if n.output and n.output[0] in sizes
        else n
        for n in model.graph.node
    )
    return out


def _ort_basic_optimize(ort, model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` after onnxruntime's basic optimizer (fusions off), in a temporary dir."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="tvm_onednn_fold_") as tmp:
        source = os.path.join(tmp, "model.onnx")
        options.optimized_model_filepath = os.path.join(tmp, "folded.onnx")
        large = model.ByteSize() > 1_800_000_000
        onnx.save(model, source, save_as_external_data=large)
        if large:
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", "folded.data"
            )
        try:
            ort.InferenceSession(
                source, options, providers=["CPUExecutionProvider"],
                disabled_optimizers=list(_ORT_FUSIONS),
            )  # fmt: skip
            return onnx.load(options.optimized_model_filepath)
        except Exception as err:  # noqa: BLE001  (onnxruntime's errors are RuntimeErrors)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelImportError(f"onnxruntime could not fold the model: {first}") from None


def fold_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[Dim]]
) -> tuple[onnx.ModelProto, FoldReport]:
    """The model with everything computable at these input shapes folded to constants.

    ``shapes`` maps input names to dims, each a size or the name of a free dim (inputs not
    named keep their declared dims). What does not depend on a free dim is folded whatever
    its size: weights computed in the graph, shape arithmetic on static dims, and so on.
    Uses onnxruntime's basic graph optimizer (constant folding, redundant-node elimination;
    fusions off), run in a temporary directory; with free dims, before each of its passes,
    the dims that shape inference knows in a partly free shape become constants
    (``Gather(Shape(x), k)``, :func:`_fold_static_dims`): onnxruntime does not fold those
    by itself. Raises
    :class:`ModelImportError` when onnxruntime is missing, rejects the model, or its result
    holds non-standard ops.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelImportError(
            "folding shape computations needs onnxruntime (pip install onnxruntime)"
        ) from None
    shapes = {k: [int(d) if is_static_dim(d) else str(d) for d in v] for k, v in shapes.items()}
    folded = _with_input_shapes(model, shapes)
    if all(is_static_dim(d) for dims in input_shapes(folded).values() for d in dims):
        folded = _ort_basic_optimize(ort, folded)
    else:
        # What onnxruntime folds may make more dims known (a reshape to [batch, 144, 8 * 8]
        # once 8 * 8 is a constant): more rounds while the dims pass finds some.
        folded = _ort_basic_optimize(ort, _fold_static_dims(folded))
        for _ in range(_FOLD_ROUNDS - 1):
            more = _fold_static_dims(folded)
            if more is folded:
                break
            folded = _ort_basic_optimize(ort, more)
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


# --------------------------------------------------------------------------- rewriting


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` nodes (``value`` form) of ``graph`` as numpy arrays."""
    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _is_int64_scalar(constants: Mapping[str, np.ndarray], name: str, value: int) -> bool:
    array = constants.get(name)
    return array is not None and array.dtype == np.int64 and array.ndim == 0 and array == value


def _is_dim(name: str, producers: Mapping[str, onnx.NodeProto], constants) -> bool:
    """Whether ``name`` is one dim of a shape, ``Gather(Shape(x), k)`` with ``k`` a scalar
    constant, possibly through a ``Cast`` to int64: an int64 size, never negative."""
    node = producers.get(name)
    if node is not None and node.op_type == "Cast":
        to = {a.name: a.i for a in node.attribute}.get("to")
        node = producers.get(node.input[0]) if to == onnx.TensorProto.INT64 else None
    if node is None or node.op_type != "Gather" or node.input[1] not in constants:
        return False
    shape = producers.get(node.input[0])
    return shape is not None and shape.op_type == "Shape" and constants[node.input[1]].ndim == 0


def _constant_node(output: str, array: np.ndarray, name: str = "") -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [output], name=name, value=numpy_helper.from_array(array)
    )


def _arange_nodes(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """``Range(0, n, 1)`` as the exclusive ``CumSum`` of ``ConstantOfShape([n], 1)``."""
    limit, out = node.input[1], node.output[0]
    base = f"{out}__arange"
    return [
        _constant_node(f"{base}_axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", [limit, f"{base}_axes"], [f"{base}_len"]),
        helper.make_node(
            "ConstantOfShape", [f"{base}_len"], [f"{base}_ones"],
            value=numpy_helper.from_array(np.array([1], np.int64)),
        ),  # fmt: skip
        _constant_node(f"{base}_axis", np.array(0, np.int64)),
        helper.make_node(
            "CumSum", [f"{base}_ones", f"{base}_axis"], [out], name=node.name, exclusive=1
        ),
    ]


def rewrite_for_tvm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, collections.Counter]:
    """Exact ONNX rewrites of two patterns TVM 0.27's importer mishandles, with their counts.

    * ``ConstantOfShape`` of a constant shape becomes a ``Constant``: TVM's converter fails
      on a 0-d result (``broadcast_to expects the input shape to have the number of ndim at
      least as ...``; ``transformers``' attention-mask code has one).
    * ``Range(0, n, 1)`` in int64, ``n`` a dim of a ``Shape``, becomes the exclusive
      ``CumSum`` of ``ConstantOfShape([n], 1)``: TVM computes a ``Range`` length with
      tensor arithmetic and gives the result a new size of its own (a ``MatchCast``); the
      rewritten form keeps the size as the dim ``n`` (e.g. ``sequence``). Opset >= 13.

    Returns ``model`` itself when nothing matches.
    """
    graph = model.graph
    constants = _constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    opset = max((o.version for o in model.opset_import if o.domain in _STANDARD_DOMAINS), default=0)
    done: collections.Counter = collections.Counter()
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in constants:
            value = {a.name: a.t for a in node.attribute}.get("value")
            fill = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
            dims = [int(d) for d in constants[node.input[0]]]
            array = np.full(dims, fill.reshape(-1)[0], dtype=fill.dtype)
            nodes.append(_constant_node(node.output[0], array, node.name))
            done["ConstantOfShape -> Constant"] += 1
        elif (
            node.op_type == "Range"
            and opset >= 13
            and _is_int64_scalar(constants, node.input[0], 0)
            and _is_int64_scalar(constants, node.input[2], 1)
            and _is_dim(node.input[1], producers, constants)
        ):
            nodes += _arange_nodes(node)
            done["Range(0, dim, 1) -> CumSum"] += 1
        else:
            nodes.append(node)
    if not done:
        return model, done
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, done


# --------------------------------------------------------------------------- import


def _unknown_shapes(mod: tvm.IRModule) -> int:
    """How many tensors of ``main`` have a shape that the input shapes do not determine.

    A tensor counts when its shape is unknown (not even its rank, or no shape expression),
    uses a symbolic variable the inputs do not define (a size known only at run time, e.g.
    after ``MatchCast`` or ``nonzero``), or is a ``MatchCast``. Shapes in terms of the
    inputs' free dims (``batch``) are known.
    """
    from tvm import relax

    func = mod["main"]
    defined = {v for p in func.params for v in relax.analysis.tir_vars_in_type(p.ty)}

    def unknown(ty) -> bool:
        if isinstance(ty, relax.TensorType):
            if ty.shape is None or not isinstance(ty.shape, relax.ShapeExpr):
                return True
            return any(v not in defined for v in relax.analysis.tir_vars_in_type(ty))
        if isinstance(ty, relax.TupleType):
            return any(unknown(f) for f in ty.fields)
        return False

    count = 0
    for block in getattr(func.body, "blocks", []):
        for binding in block.bindings:
            if isinstance(binding, relax.MatchCast) or unknown(binding.var.ty):
                count += 1
    return count + int(unknown(func.ret_ty))


def _relax_shapes(specs: Sequence[TensorSpec]) -> dict[str, list]:
    """Input shapes for TVM's importer: sizes, and one ``int64`` variable per free dim name."""
    from tvm import tirx

    variables: dict[str, tirx.Var] = {}
    return {
        s.name: [d if is_static_dim(d) else variables.setdefault(d, tirx.Var(d, "int64"))
                 for d in s.shape]
        for s in specs
    }  # fmt: skip


def _import(model: onnx.ModelProto, specs: Sequence[TensorSpec], quiet=False) -> tvm.IRModule:
    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

    shape_dict = _relax_shapes(specs)
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
    shape_dict: Mapping[str, Sequence[int | str]] | None = None,
    *,
    fold: bool | str = "auto",
) -> tvm.IRModule:
    """Import an ONNX model (object, path or bytes) as a Relax module.

    Dynamic input dims stay symbolic: each free dim becomes an ``int64`` TIR variable named
    as in :func:`model_inputs` (``batch`` for ``dim_param="batch"``). ``shape_dict`` fixes
    some or all of them, or overrides declared sizes (e.g. a batch size).

    ``fold``: ``"auto"`` (default) imports the model as it is and keeps that result when
    every value's shape follows from the input shapes; if TVM's importer fails or leaves
    values of unknown shape, it imports the graph folded at the input shapes, free dims
    left free (:func:`fold_shapes`), and/or rewritten (:func:`rewrite_for_tvm`) instead,
    whichever first imports with all shapes known (else the one with fewest unknown), and
    logs what it folded or rewrote at INFO on ``tvm_onednn.frontend``. ``True`` folds
    first, ``False`` imports the graph as it is. A reshape to a size fixed at export that
    a free dim would break (e.g. ``[1, 9216]`` at a free batch) is refused. Every failure
    is a :class:`ModelImportError`.
    """
    if fold not in ("auto", True, False):
        raise ValueError(f"fold must be 'auto', True or False, got {fold!r}")
    model = load_model(model)
    specs = model_inputs(model, shape_dict)
    mod = _import_best(model, specs, fold)
    _check_reshapes(mod)
    return mod


def _variants(model: onnx.ModelProto, specs: Sequence[TensorSpec], fold: bool | str):
    """The graphs to try importing, in order, as ``(label, make)``.

    ``make(note)`` returns the graph (appending what was done to ``note``), or None when
    the variant would change nothing, and raises :class:`ModelImportError` when it cannot
    be made. At static input shapes folding comes first (it then removes every shape
    computation); with free dims the rewrites alone come first (onnxruntime's folded form
    of a dynamic graph can be harder for TVM: it gathers shape dims with 1-d indices).
    """
    shapes = {s.name: list(s.shape) for s in specs}

    @functools.cache
    def folded() -> tuple[onnx.ModelProto, str]:
        graph, report = fold_shapes(model, shapes)
        return graph, str(report)

    def rewritten(graph: onnx.ModelProto, note: list[str]) -> onnx.ModelProto | None:
        graph, done = rewrite_for_tvm(graph)
        if not done:
            return None
        note.append("rewrote " + ", ".join(f"{n} {what}" for what, n in done.most_common()))
        return graph

    def as_is(note):
        return model

    def rewrite(note):
        return rewritten(model, note)

    def fold_(note):
        graph, report = folded()
        note.append(report)
        return graph

    def fold_rewrite(note):
        return rewritten(fold_(note), note)

    if fold is False:
        return [("as is", as_is)]
    folding = [("folded", fold_), ("folded and rewritten", fold_rewrite)]
    if fold is True:
        return folding
    if all(s.is_static for s in specs):
        return [("as is", as_is), *folding, ("rewritten", rewrite)]
    return [("as is", as_is), ("rewritten", rewrite), *folding]


def _import_best(
    model: onnx.ModelProto, specs: Sequence[TensorSpec], fold: bool | str
) -> tvm.IRModule:
    """The first variant (:func:`_variants`) that imports with every shape known, else the
    one with the fewest unknown shapes; what was folded or rewritten is logged at INFO."""
    best: tuple[int, tvm.IRModule, str] | None = None
    errors: list[tuple[str, str]] = []
    for step, make in _variants(model, specs, fold):
        note: list[str] = []
        try:
            graph = make(note)
            if graph is None:
                continue
            mod = _import(graph, specs, quiet=fold == "auto")
        except Exception as err:  # noqa: BLE001  (TVM raises anything: TVMError, KeyError...)
            why = str(err) if isinstance(err, ModelImportError) else _why(err)
            if not errors or why != errors[-1][1]:
                errors.append((step, why))
            log.info("the graph %s did not import (%s)", step, why)
            continue
        unknown = _unknown_shapes(mod)
        if best is None or unknown < best[0]:
            best = (unknown, mod, "; ".join(note))
        if unknown == 0:
            break
        log.info("the graph %s imports with %d value(s) of unknown shape", step, unknown)
    if best is None:
        (step, why), rest = errors[0], errors[1:]
        text = "TVM's ONNX importer failed" + ("" if step == "as is" else f" on the graph {step}")
        text += f": {why}"
        if rest:
            text += " (the graph " + "; the graph ".join(f"{s}: {w}" for s, w in rest) + ")"
        raise ModelImportError(text)
    unknown, mod, note = best
    if note:
        log.info("%s", note)
    if unknown:
        log.warning("%d value(s) of unknown shape are left (%s)", unknown, note or "as imported")
    return mod


def _check_reshapes(mod: tvm.IRModule) -> None:
    """Raise if ``main`` reshapes between element counts not provably equal.

    TVM's reshape trusts its target shape: a graph that reshapes to a fixed shape (e.g.
    ``[1, 9216]``, exported at batch 1) imported with a free batch would run at any batch
    and silently read the wrong elements.
    """
    from tvm import relax
    from tvm.sym import Analyzer

    analyzer = Analyzer()
    reshape = tvm.ir.Op.get("relax.reshape")
    for block in getattr(mod["main"].body, "blocks", []):
        for binding in block.bindings:
            call = binding.value
            if not (isinstance(call, relax.Call) and call.op.same_as(reshape)):
                continue
            src, dst = call.args[0].ty.shape, binding.var.ty.shape
            if not (isinstance(src, relax.ShapeExpr) and isinstance(dst, relax.ShapeExpr)):
                continue
            if not analyzer.can_prove_equal(_product(src.values), _product(dst.values)):
                raise ModelImportError(
                    f"the graph reshapes a tensor of shape {_relax_fmt(src)} to "
                    f"{_relax_fmt(dst)}, which holds as many elements only for some sizes of "
                    "its free dims; fix them with shape_dict (the model was exported for "
                    "fixed sizes)"
                )


def _relax_fmt(shape) -> str:
    """A Relax shape as ``[batch, 512, 6, 6]`` (``batch * 4``, not ``batch * T.int64(4)``)."""
    return _fmt([re.sub(r"T\.int64\((-?\d+)\)", r"\1", str(d)) for d in shape.values])


def _product(dims):
    from tvm import tirx

    out = tirx.IntImm("int64", 1)
    for d in dims:
        out = out * d
    return out
