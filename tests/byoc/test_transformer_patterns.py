"""Transformer ops in oneDNN regions: layer_norm, softmax (+ NaN guard), standalone
activations, broadcasting binary ops, reshape / transpose, the matmul output scale and a
broadcasting residual (attention mask); then a whole encoder layer with symbolic batch and
sequence length.

Each module is compiled with the "onednn" pipeline and compared with TVM's default LLVM
build of the same module (float32 on both sides, other summation orders: RTOL = ATOL =
1e-4). Light ops (element-wise, layout) are offloaded only beside real work, so their
modules start with a layer_norm or a matmul.
"""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_onednn.byoc.partition import partition_for_onednn
from tvm_onednn.byoc.summary import NOT_WORTH_A_REGION, offload_summary
from tvm_onednn.testing import Runner, build

from ..quantize.helpers import regions
from .builders import dataflow_function
from .encoder import encoder_inputs, encoder_module

RTOL, ATOL = 1e-4, 1e-4
RNG = np.random.default_rng(11)


def _sym(name):
    return tvm.tirx.Var(name, "int64")


def _tensor(name, shape, dtype="float32"):
    return relax.Var(name, relax.TensorType(shape, dtype))


def _const(shape, scale=0.5):
    return relax.const((RNG.standard_normal(shape) * scale).astype("float32"))


def _layer_norm(bb, x, channels):
    gamma = relax.const((1 + 0.1 * RNG.standard_normal(channels)).astype("float32"))
    beta = _const((channels,), 0.1)
    return bb.emit(relax.op.nn.layer_norm(x, gamma, beta, axes=[-1], epsilon=1e-5))


def _assert_like_tvm(mod, *inputs):
    expected = Runner(build(mod, "default"))(*inputs)
    actual = Runner(build(mod))(*inputs)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def _nodes(mod) -> list[dict]:
    (region,) = regions(mod)
    return region.nodes


def _data(*shape):
    return RNG.standard_normal(shape).astype("float32")


# Static shapes, and the same with symbolic batch / sequence (bound at run time).
SHAPES = {"static": ([2, 5, 32], (2, 5)), "symbolic": (["n", "s", 32], (3, 7))}


def _shape(kind):
    dims, run = SHAPES[kind]
    symbols = {d: _sym(d) for d in dims if isinstance(d, str)}
    return [symbols.get(d, d) for d in dims], [*run, dims[-1]]


@pytest.mark.parametrize("kind", SHAPES)
def test_layer_norm(kind):
    shape, run_shape = _shape(kind)
    mod = dataflow_function([_tensor("x", shape)], lambda bb, x: _layer_norm(bb, x, 32))
    (node,) = _nodes(mod)
    assert node["op"] == "onednn.layer_norm" and node["attrs"] == {"epsilon": 1e-5}
    _assert_like_tvm(mod, _data(*run_shape))


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("guard", [True, False])
def test_softmax(kind, guard):
    shape, run_shape = _shape(kind)

    def body(bb, x):
        p = bb.emit(relax.op.nn.softmax(x, axis=-1))
        if guard:
            nan = bb.emit(relax.op.isnan(p))
            p = bb.emit(relax.op.where(nan, relax.const(np.float32(0)), p))
        return p

    mod = dataflow_function([_tensor("x", shape)], body)
    (node,) = _nodes(mod)
    assert node["op"] == "onednn.softmax"
    assert node["attrs"] == {"axis": 2, "nan_to_zero": guard}
    x = _data(*run_shape)
    if guard:  # a fully masked row: softmax is NaN there, the guard makes it 0
        x[0, 1, :] = -np.inf
    _assert_like_tvm(mod, x)


def test_softmax_guard_must_write_zero():
    def body(bb, x):
        p = bb.emit(relax.op.nn.softmax(x, axis=-1))
        return relax.op.where(bb.emit(relax.op.isnan(p)), relax.const(np.float32(1)), p)

    summary = offload_summary(dataflow_function([_tensor("x", [2, 8])], body))
    assert summary.composites == {"onednn.softmax": 1}  # the softmax alone
    assert summary.kept_ops["relax.where"] == 1


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu", "sigmoid", "tanh", "silu"])
def test_standalone_activation_after_layer_norm(activation, kind):
    shape, run_shape = _shape(kind)
    act = {
        "gelu": relax.op.nn.gelu,
        "gelu_tanh": relax.op.nn.gelu_tanh,
        "relu": relax.op.nn.relu,
        "sigmoid": relax.op.sigmoid,
        "tanh": relax.op.tanh,
        "silu": relax.op.nn.silu,
    }[activation]
    mod = dataflow_function([_tensor("x", shape)], lambda bb, x: act(_layer_norm(bb, x, 32)))
    assert [n["op"] for n in _nodes(mod)] == ["onednn.layer_norm", f"onednn.{activation}"]
    _assert_like_tvm(mod, _data(*run_shape))


BINARY = {
    "add": relax.op.add,
    "subtract": relax.op.subtract,
    "multiply": relax.op.multiply,
    "divide": relax.op.divide,
    "maximum": relax.op.maximum,
    "minimum": relax.op.minimum,
}


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("op", BINARY)
def test_broadcast_binary_after_layer_norm(kind, op):
    """``layer_norm(x) op y`` with ``y`` [n, s, 1] broadcast along channels, then a
    constant [32] operand on the left."""
    shape, run_shape = _shape(kind)

    def body(bb, x, y):
        out = bb.emit(BINARY[op](_layer_norm(bb, x, 32), y))
        return BINARY[op](relax.const(np.linspace(0.5, 1.5, 32, dtype="float32")), out)

    mod = dataflow_function([_tensor("x", shape), _tensor("y", [*shape[:-1], 1])], body)
    nodes = _nodes(mod)
    assert [n["op"] for n in nodes] == ["onednn.layer_norm", f"onednn.{op}", f"onednn.{op}"]
    assert nodes[2]["inputs"][0][0] == "const"
    y = RNG.uniform(0.5, 2.0, (*run_shape[:-1], 1)).astype("float32")
    _assert_like_tvm(mod, _data(*run_shape), y)


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("activation", ["relu", "gelu", "clip"])
def test_binary_with_activation(activation, kind):
    act = {
        "relu": relax.op.nn.relu,
        "gelu": relax.op.nn.gelu,
        "clip": lambda t: relax.op.clip(t, -0.5, 0.5),
    }[activation]
    shape, run_shape = _shape(kind)
    mod = dataflow_function(
        [_tensor("x", shape), _tensor("y", shape)],
        lambda bb, x, y: act(bb.emit(relax.op.add(_layer_norm(bb, x, 32), y))),
    )
    nodes = _nodes(mod)
    assert [n["op"] for n in nodes] == ["onednn.layer_norm", f"onednn.add_{activation}"]
    if activation == "clip":
        assert nodes[1]["attrs"] == {"clip_min": -0.5, "clip_max": 0.5}
    _assert_like_tvm(mod, _data(*run_shape), _data(*run_shape))


@pytest.mark.parametrize("kind", SHAPES)
def test_reshape_and_transpose_views(kind):
    """Heads split and merged as in attention: [b, s, 32] -> [b, s, 4, 8] -> [b, 4, s, 8]
    -> layer_norm over 8 -> back to [b, s, 32]."""
    shape, run_shape = _shape(kind)
    b, s = shape[:2]

    def body(bb, x):
        t = bb.emit(relax.op.reshape(_layer_norm(bb, x, 32), [b, s, 4, 8]))
        t = bb.emit(relax.op.permute_dims(t, [0, 2, 1, 3]))
        t = _layer_norm(bb, t, 8)
        t = bb.emit(relax.op.permute_dims(t, [0, 2, 1, 3]))
        return relax.op.reshape(t, [b, s, 32])

    mod = dataflow_function([_tensor("x", shape)], body)
    nodes = _nodes(mod)
    assert [n["op"].removeprefix("onednn.") for n in nodes] == [
        "layer_norm", "reshape", "transpose", "layer_norm", "transpose", "reshape",
    ]  # fmt: skip
    assert nodes[2]["attrs"] == {"axes": [0, 2, 1, 3]}
    _assert_like_tvm(mod, _data(*run_shape))


@pytest.mark.parametrize("kind", SHAPES)
def test_matmul_output_scale_and_broadcast_mask(kind):
    """``(q * c) @ (k * c) + mask``: the scales fold into ``output_scale`` (c^2), the mask
    [b, 1, s, s] broadcasts over the heads as the matmul's residual."""
    shape, run_shape = _shape(kind)
    b, s = shape[:2]
    c = relax.const(np.float32(8**-0.25))

    def body(bb, q, k, mask):
        qs = bb.emit(relax.op.multiply(q, c))
        ks = bb.emit(relax.op.multiply(bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2])), c))
        return relax.op.add(bb.emit(relax.op.matmul(qs, ks)), mask)

    heads = [b, 4, s, 8]
    mod = dataflow_function(
        [_tensor("q", heads), _tensor("k", heads), _tensor("mask", [b, 1, s, s])], body
    )
    nodes = _nodes(mod)
    assert [n["op"] for n in nodes] == ["onednn.transpose", "onednn.matmul_add"]
    assert nodes[1]["attrs"]["output_scale"] == pytest.approx(8**-0.5, rel=1e-6)
    n, seq = run_shape[:2]
    mask = np.where(RNG.random((n, 1, seq, seq)) < 0.3, -1e4, 0).astype("float32")
    _assert_like_tvm(mod, _data(n, 4, seq, 8), _data(n, 4, seq, 8), mask)


# ----------------------------------------------------------------------------------------
# What stays with TVM, and why.


def _reasons(mod, op):
    return dict(offload_summary(mod).reasons.get(op, {}))


def test_a_lone_add_or_reshape_stays_with_tvm():
    n = _sym("n")
    mod = dataflow_function(
        [_tensor("x", [n, 32]), _tensor("y", [n, 32])],
        lambda bb, x, y: relax.op.reshape(bb.emit(relax.op.add(x, y)), [n, 4, 8]),
    )
    relax.analysis.well_formed(partition_for_onednn(mod))  # inlined back in n's terms
    summary = offload_summary(mod)
    assert summary.regions == 0
    assert _reasons(mod, "relax.add") == {NOT_WORTH_A_REGION: 1}
    assert _reasons(mod, "relax.reshape") == {NOT_WORTH_A_REGION: 1}
    x, y = _data(3, 32), _data(3, 32)
    _assert_like_tvm(mod, x, y)


def test_a_chain_keeps_its_bias_add_and_activation():
    """The matmul chain is matched before a standalone add or activation could be."""
    mod = dataflow_function(
        [_tensor("x", [4, 16])],
        lambda bb, x: relax.op.nn.gelu(
            bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, _const((16, 8)))), _const((8,))))
        ),
    )
    assert offload_summary(mod).composites == {"onednn.matmul_bias_gelu": 1}


def test_layer_norm_over_two_axes_stays_with_tvm():
    def body(bb, x):
        gamma, beta = _const((4, 8)), _const((4, 8))
        return relax.op.nn.layer_norm(x, gamma, beta, axes=[-2, -1])

    mod = dataflow_function([_tensor("x", [2, 4, 8])], body)
    assert _reasons(mod, "relax.nn.layer_norm") == {
        "layer_norm is offloaded over the last axis only": 1
    }


def test_float16_softmax_stays_with_tvm():
    mod = dataflow_function(
        [_tensor("x", [2, 8], "float16")], lambda bb, x: relax.op.nn.softmax(x, axis=-1)
    )
    assert _reasons(mod, "relax.nn.softmax") == {
        "the output has dtype float16 (runtime runs ('float32',))": 1
    }


def test_reshape_to_an_expression_dim_stays_with_tvm():
    n, s = _sym("n"), _sym("s")
    mod = dataflow_function(
        [_tensor("x", [n, s, 32])],
        lambda bb, x: relax.op.reshape(_layer_norm(bb, x, 32), [n * s, 32]),
    )
    summary = offload_summary(mod)
    assert summary.composites == {"onednn.layer_norm": 1}
    (reason,) = summary.reasons["relax.reshape"]
    assert "n * s is an expression" in reason


# ----------------------------------------------------------------------------------------
# A whole encoder layer (MiniLM's structure, random weights), symbolic batch and sequence.


@pytest.fixture(scope="module")
def encoder():
    mod = encoder_module(layers=1)
    return mod, Runner(build(mod)), Runner(build(mod, "default"))


def test_encoder_layer_is_one_region(encoder):
    summary = offload_summary(encoder[0])
    assert summary.regions == 1
    assert summary.composites == {
        "onednn.matmul_bias": 3,  # q, k, v projections
        "onednn.reshape": 4,
        "onednn.transpose": 4,
        "onednn.matmul_add": 1,  # scores: output_scale + broadcast attention mask
        "onednn.softmax": 1,  # with the NaN guard
        "onednn.matmul": 1,  # probabilities @ v
        "onednn.matmul_bias_add": 2,  # output projection and FFN out, with residuals
        "onednn.layer_norm": 2,
        "onednn.matmul_bias_gelu": 1,  # the erf GELU, recognized
    }
    # Only the mask arithmetic stays with TVM: computed once, a region input.
    assert summary.kept_ops == {"relax.reshape": 1, "relax.broadcast_to": 1, "relax.where": 1}


@pytest.mark.parametrize("batch, seq", [(1, 7), (2, 32), (1, 128)])
def test_encoder_layer_runs_like_tvm(encoder, batch, seq):
    _, ours, reference = encoder
    inputs = encoder_inputs(batch, seq)
    np.testing.assert_allclose(ours(*inputs), reference(*inputs), rtol=RTOL, atol=ATOL)


def test_two_encoder_layers_are_one_region():
    summary = offload_summary(encoder_module(layers=2))
    assert summary.regions == 1
    assert summary.composites["onednn.layer_norm"] == 4
    assert set(summary.kept_ops) == {"relax.reshape", "relax.broadcast_to", "relax.where"}


def test_a_strided_slice_to_a_symbolic_end_does_not_split_regions():
    """BERT's position ids: ``strided_slice(table, end=(s,))`` reads no tensor of the
    graph; TVM's MergeCompositeFunctions cannot read its argument and used to give up on
    the whole module (one region per composite)."""
    s = _sym("s")
    table = _const((64, 16))

    def body(bb, x):
        positions = relax.op.strided_slice(table, axes=[0], begin=[0], end=[s], assume_inbound=True)
        positions = bb.emit(positions)
        y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, _const((16, 16)))), positions))
        return relax.op.nn.relu(bb.emit(relax.op.matmul(y, _const((16, 8)))))

    mod = dataflow_function([_tensor("x", [s, 16])], body)
    summary = offload_summary(mod)
    assert summary.regions == 1
    assert summary.composites == {"onednn.matmul_add": 1, "onednn.matmul_relu": 1}
    assert summary.kept_ops == {"relax.strided_slice": 1}
    _assert_like_tvm(mod, _data(9, 16))
