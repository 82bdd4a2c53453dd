"""CanonicalizeGeluTanh and FoldMatmulScale: the forms they produce, what they leave
alone, and unchanged numerics vs TVM's default build (float32, RTOL = ATOL = 1e-5)."""

import math

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_onednn.passes import CanonicalizeGeluTanh, FoldMatmulScale
from tvm_onednn.testing import run

RNG = np.random.default_rng(3)


def _f32(value):
    return relax.const(np.float32(value))


def _module(shapes, body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            gv = bb.emit_output(body(bb, *params))
        bb.emit_func_output(gv)
    return bb.finalize()


def _ops(mod) -> list[str]:
    return [
        b.value.op.name
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    ]


def _same_numerics(before, after, *inputs):
    expected = run(before, inputs, pipeline="default")
    np.testing.assert_allclose(run(after, inputs, pipeline="default"), expected, 1e-5, 1e-5)


def _gelu_tanh(cube: str, slope=math.sqrt(2 / math.pi), half_first=False):
    def body(bb, x):
        if cube == "pow":
            x3 = bb.emit(relax.op.power(x, _f32(3.0)))
        else:
            x3 = bb.emit(relax.op.multiply(bb.emit(relax.op.multiply(x, x)), x))
        inner = bb.emit(relax.op.add(x, bb.emit(relax.op.multiply(_f32(0.044715), x3))))
        t = bb.emit(relax.op.tanh(bb.emit(relax.op.multiply(inner, _f32(slope)))))
        one_plus = bb.emit(relax.op.add(_f32(1.0), t))
        if half_first:
            return relax.op.multiply(bb.emit(relax.op.multiply(_f32(0.5), x)), one_plus)
        return relax.op.multiply(bb.emit(relax.op.multiply(x, one_plus)), _f32(0.5))

    return body


@pytest.mark.parametrize("cube", ["pow", "mul"])
@pytest.mark.parametrize("half_first", [False, True])
def test_gelu_tanh_is_recognized(cube, half_first):
    mod = _module([[4, 16]], _gelu_tanh(cube, half_first=half_first))
    after = CanonicalizeGeluTanh()(mod)
    assert _ops(after) == ["relax.nn.gelu_tanh"]
    _same_numerics(mod, after, RNG.standard_normal((4, 16)).astype("float32") * 3)


def test_gelu_tanh_with_another_slope_is_left_alone():
    mod = _module([[4, 16]], _gelu_tanh("pow", slope=0.7))
    assert "relax.nn.gelu_tanh" not in _ops(CanonicalizeGeluTanh()(mod))


def _attention_scores(q_scale, k_scale, divide_k=False):
    def body(bb, q, k):
        q = bb.emit(relax.op.multiply(q, q_scale))
        k = bb.emit(relax.op.divide(k, k_scale) if divide_k else relax.op.multiply(k_scale, k))
        return relax.op.matmul(q, k)

    return body


def test_scalar_scales_move_after_the_matmul():
    n = tvm.tirx.Var("n", "int64")
    shapes = [[n, 4, 8, 16], [n, 4, 16, 8]]
    mod = _module(shapes, _attention_scores(_f32(0.5), _f32(4.0), divide_k=True))
    after = FoldMatmulScale()(mod)
    assert _ops(after) == ["relax.matmul", "relax.multiply"]
    matmul, scale = (b.value for b in after["main"].body.blocks[0].bindings[:2])
    assert list(matmul.args) == list(mod["main"].params)
    assert float(scale.args[1].value.numpy()) == 0.125
    q, k = (RNG.standard_normal((2, *s[1:])).astype("float32") for s in shapes)
    _same_numerics(mod, after, q, k)


def _scaled_q(scale):
    def body(bb, q, k):
        return relax.op.matmul(bb.emit(relax.op.multiply(q, scale)), k)

    return _module([[2, 8, 16], [2, 16, 8]], body)


def test_a_one_element_scale_of_the_operand_rank_folds():
    mod = _scaled_q(relax.const(np.full((1, 1, 1), 0.5, "float32")))
    assert _ops(FoldMatmulScale()(mod)) == ["relax.matmul", "relax.multiply"]


@pytest.mark.parametrize(
    "scale",
    [
        np.linspace(0.5, 1, 16, dtype="float32"),  # per channel of K: not a scalar
        np.full((1, 1, 1, 1), 0.5, "float32"),  # makes q rank 4: broadcasts the operand
    ],
    ids=["per_channel", "broadcasting"],
)
def test_other_scales_stay(scale):
    mod = _scaled_q(relax.const(scale))
    assert _ops(FoldMatmulScale()(mod)) == ["relax.multiply", "relax.matmul"]


def test_a_scaled_operand_used_elsewhere_stays():
    def body(bb, q, k):
        scaled = bb.emit(relax.op.multiply(q, _f32(0.5)))
        product = bb.emit(relax.op.matmul(scaled, k))
        return relax.op.add(product, bb.emit(relax.op.sum(scaled)))

    mod = _module([[8, 16], [16, 8]], body)
    assert _ops(FoldMatmulScale()(mod)) == _ops(mod)


def test_a_product_divided_by_a_scalar_becomes_a_multiply():
    """scores / sqrt(d) -> scores * (1 / sqrt(d)), the form fused as output_scale."""

    def body(bb, q, k):
        return relax.op.divide(bb.emit(relax.op.matmul(q, k)), _f32(4.0))

    mod = _module([[2, 8, 16], [2, 16, 8]], body)
    after = FoldMatmulScale()(mod)
    assert _ops(after) == ["relax.matmul", "relax.multiply"]
    assert float(after["main"].body.blocks[0].bindings[1].value.args[1].value.numpy()) == 0.25
    q, k = RNG.standard_normal((2, 8, 16), "float32"), RNG.standard_normal((2, 16, 8), "float32")
    _same_numerics(mod, after, q, k)


def test_a_divided_product_used_elsewhere_or_by_a_tensor_stays():
    def used_twice(bb, q, k):
        product = bb.emit(relax.op.matmul(q, k))
        return relax.op.add(bb.emit(relax.op.divide(product, _f32(4.0))), product)

    def by_tensor(bb, q, k):
        divisor = relax.const(np.linspace(1, 2, 8, dtype="float32"))
        return relax.op.divide(bb.emit(relax.op.matmul(q, k)), divisor)

    for body in (used_twice, by_tensor):
        mod = _module([[8, 16], [16, 8]], body)
        assert _ops(FoldMatmulScale()(mod)) == _ops(mod)
