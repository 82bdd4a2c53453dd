"""Graph rewrites: the op forms they produce, and unchanged numerics vs TVM's build."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvm_onednn import from_onnx
from tvm_onednn.passes import CanonicalizeClip, CanonicalizeGelu, FoldBatchNormIntoConv
from tvm_onednn.testing import run

RNG = np.random.default_rng(0)


def _model(nodes, inputs, output, out_shape, initializers):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ops(mod: tvm.IRModule) -> list[str]:
    ops = []
    relax.analysis.post_order_visit(
        mod["main"],
        lambda e: ops.append(e.op.name)
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op)
        else None,
    )
    return ops


def _assert_same_numerics(before, after, x, rtol=1e-5, atol=1e-5):
    expected = run(before, [x], pipeline="default")
    actual = run(after, [x], pipeline="default")
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def _rewrite(mod, *passes):
    mod = relax.transform.FoldConstant()(mod)
    for p in passes:
        mod = p(mod)
        assert relax.analysis.check_well_formed(mod)
    return mod


@pytest.mark.parametrize(
    "bounds, expected_op",
    [((-1.0, 2.5), "relax.clip"), ((0.0, None), "relax.nn.relu"), ((None, 4.0), "relax.clip")],
)
def test_canonicalize_clip_rebuilds_clip(bounds, expected_op):
    lo, hi = bounds
    inits = {k: v for k, v in (("lo", lo), ("hi", hi)) if v is not None}
    node = helper.make_node("Clip", ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""], ["y"])
    mod = from_onnx(_model([node], {"x": [2, 8]}, "y", [2, 8], inits))
    after = _rewrite(mod, CanonicalizeClip())
    ops = _ops(after)
    assert expected_op in ops and "relax.call_tir" not in ops
    _assert_same_numerics(mod, after, RNG.normal(scale=3, size=(2, 8)).astype("float32"))


def test_canonicalize_clip_leaves_non_scalar_bounds():
    node = helper.make_node("Max", ["x", "m"], ["y"])
    mod = from_onnx(_model([node], {"x": [2, 8]}, "y", [2, 8], {"m": RNG.normal(size=(2, 8))}))
    after = _rewrite(mod, CanonicalizeClip())
    assert "relax.clip" not in _ops(after)


@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batchnorm_into_conv(with_bias):
    inits = {
        "w": RNG.normal(size=(8, 3, 3, 3)),
        "g": RNG.uniform(0.5, 1.5, 8),
        "b": RNG.normal(size=8),
        "m": RNG.normal(size=8),
        "v": RNG.uniform(0.5, 1.5, 8),
    }
    conv_inputs = ["x", "w"]
    if with_bias:
        inits["cb"] = RNG.normal(size=8)
        conv_inputs.append("cb")
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], epsilon=1e-3),
    ]
    mod = from_onnx(_model(nodes, {"x": [1, 3, 8, 8]}, "y", [1, 8, 8, 8], inits))
    after = _rewrite(mod, FoldBatchNormIntoConv(), relax.transform.FoldConstant())
    ops = _ops(after)
    assert "relax.nn.batch_norm" not in ops and ops.count("relax.nn.conv2d") == 1
    _assert_same_numerics(mod, after, RNG.normal(size=(1, 3, 8, 8)).astype("float32"), atol=1e-4)


def test_fold_batchnorm_keeps_non_conv_batchnorm():
    inits = {"g": np.ones(3), "b": np.zeros(3), "m": np.zeros(3), "v": np.ones(3)}
    node = helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])
    mod = from_onnx(_model([node], {"x": [1, 3, 4, 4]}, "y", [1, 3, 4, 4], inits))
    after = _rewrite(mod, FoldBatchNormIntoConv())
    assert "relax.nn.batch_norm" in _ops(after)


def _gelu_nodes(variant):
    erf_part = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
    ]
    if variant == "x_times_a_then_half":
        tail = [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    else:  # half first
        tail = [helper.make_node("Mul", ["x", "half"], ["m"]), helper.make_node("Mul", ["m", "a"], ["y"])]
    return erf_part + tail


@pytest.mark.parametrize("variant", ["x_times_a_then_half", "half_first"])
def test_canonicalize_gelu(variant):
    inits = {"sqrt2": np.sqrt(2.0), "one": 1.0, "half": 0.5}
    mod = from_onnx(_model(_gelu_nodes(variant), {"x": [4, 16]}, "y", [4, 16], inits))
    after = _rewrite(mod, CanonicalizeGelu())
    ops = _ops(after)
    assert ops == ["relax.nn.gelu"]
    _assert_same_numerics(mod, after, RNG.normal(size=(4, 16)).astype("float32"))


def test_canonicalize_gelu_rejects_wrong_constants():
    inits = {"sqrt2": 1.5, "one": 1.0, "half": 0.5}
    mod = from_onnx(_model(_gelu_nodes("half_first"), {"x": [4, 16]}, "y", [4, 16], inits))
    assert "relax.nn.gelu" not in _ops(_rewrite(mod, CanonicalizeGelu()))


def test_passes_do_not_mutate_input():
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    mod = from_onnx(_model([node], {"x": [2, 8]}, "y", [2, 8], {"lo": -1.0, "hi": 1.0}))
    before = mod.script(show_meta=False)
    CanonicalizeClip()(mod)
    assert mod.script(show_meta=False) == before


def test_rewrite_stack_sum_to_adds():
    from tvm_onednn.passes import RewriteStackSum

    node = helper.make_node("Sum", ["x", "y", "z"], ["s"])
    inputs = {"x": [1, 4, 3, 3], "y": [1, 4, 3, 3], "z": [1, 4, 3, 3]}
    mod = from_onnx(_model([node], inputs, "s", [1, 4, 3, 3], {}))
    assert "relax.stack" in _ops(mod)
    after = _rewrite(mod, RewriteStackSum())
    assert _ops(after) == ["relax.add", "relax.add"]
    xs = [RNG.normal(size=(1, 4, 3, 3)).astype("float32") for _ in range(3)]
    expected = run(mod, xs, pipeline="default")
    np.testing.assert_allclose(run(after, xs, pipeline="default"), expected, rtol=1e-6)


def test_rewrite_stack_sum_keeps_real_broadcasts():
    from tvm_onednn.passes import RewriteStackSum

    node = helper.make_node("Sum", ["x", "y"], ["s"])
    mod = from_onnx(_model([node], {"x": [1, 4, 3, 3], "y": [1, 4, 1, 1]}, "s", [1, 4, 3, 3], {}))
    after = _rewrite(mod, RewriteStackSum())
    assert "relax.add" not in _ops(after) or "relax.broadcast_to" in _ops(after)


def test_fold_constants_with_numpy_matches_tvm_folding():
    from tvm_onednn.passes import FoldConstantsWithNumpy

    nodes = [
        helper.make_node("Clip", ["x", "lo", "hi"], ["c"]),
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["c", "wt"], ["m"]),
        helper.make_node("Reshape", ["b", "shape"], ["br"]),
        helper.make_node("Add", ["m", "br"], ["y"]),
    ]
    inits = {"lo": -1.0, "hi": 1.0, "w": RNG.normal(size=(5, 8)), "b": RNG.normal(size=5)}
    model = _model(nodes, {"x": [2, 8]}, "y", [2, 5], inits)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 5], np.int64), "shape"))
    mod = from_onnx(model)
    folded = FoldConstantsWithNumpy()(mod)
    assert relax.analysis.check_well_formed(folded)
    ops = _ops(folded)
    assert not {"relax.isnan", "relax.where", "relax.permute_dims", "relax.reshape"} & set(ops)
    _assert_same_numerics(mod, folded, RNG.normal(size=(2, 8)).astype("float32"))
