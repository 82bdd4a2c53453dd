"""Structural tests: each pass on a Before module gives exactly the Expected module.

Every case goes through ``_check``, which also asserts that the pass returns a new module
and leaves its input untouched. Cases whose Expected is ``None`` must be left unchanged.
(The autouse fixture in conftest.py checks well-formedness after every pass.)
"""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_onednn.passes import (
    CanonicalizeClip,
    CanonicalizeGelu,
    FoldBatchNormIntoConv,
    FoldConstantCalls,
    FoldConstantsWithNumpy,
    RewriteStackSum,
)

RNG = np.random.default_rng(0)
FLT_MAX = 3.4028234663852886e38


def _copy(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.ir.load_json(tvm.ir.save_json(mod))


def _check(pass_, before: tvm.IRModule, expected: tvm.IRModule | None):
    """``pass_(before)`` equals ``expected`` (``before`` itself when None); input untouched."""
    snapshot = _copy(before)
    after = pass_(before)
    assert not after.same_as(before), "a pass must return a new module"
    tvm.ir.assert_structural_equal(before, snapshot)  # not mutated
    tvm.ir.assert_structural_equal(after, snapshot if expected is None else expected)
    return after


# ---------------------------------------------------------------- CanonicalizeClip


@I.ir_module
class ClipCallTIR:
    """The ONNX importer's ``Clip(x, -1, 2.5)``, after FoldConstant."""

    @T.prim_func(private=True, s_tir=True)
    def maximum(
        x: T.Buffer((T.int64(2), T.int64(8)), "float32"),
        lo: T.Buffer((), "float32"),
        out: T.Buffer((T.int64(2), T.int64(8)), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for ax0, ax1 in T.grid(T.int64(2), T.int64(8)):
            with T.sblock("T_maximum"):
                v0, v1 = T.axis.remap("SS", [ax0, ax1])
                T.reads(x[v0, v1], lo[()])
                T.writes(out[v0, v1])
                out[v0, v1] = T.max(x[v0, v1], lo[()])

    @T.prim_func(private=True, s_tir=True)
    def minimum(
        x: T.Buffer((T.int64(2), T.int64(8)), "float32"),
        hi: T.Buffer((), "float32"),
        out: T.Buffer((T.int64(2), T.int64(8)), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for ax0, ax1 in T.grid(T.int64(2), T.int64(8)):
            with T.sblock("T_minimum"):
                v0, v1 = T.axis.remap("SS", [ax0, ax1])
                T.reads(x[v0, v1], hi[()])
                T.writes(out[v0, v1])
                out[v0, v1] = T.min(x[v0, v1], hi[()])

    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        cls = ClipCallTIR
        with R.dataflow():
            out_ty = R.Tensor((2, 8), "float32")
            lv = R.call_tir(cls.maximum, (x, R.const(-1.0, "float32")), out_ty=out_ty)
            y = R.call_tir(cls.minimum, (lv, R.const(2.5, "float32")), out_ty=out_ty)
            R.output(y)
        return y


@I.ir_module
class ClipExpected:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        with R.dataflow():
            y = R.clip(x, -1.0, 2.5)
            R.output(y)
        return y


def test_clip_from_call_tir_pair():
    _check(CanonicalizeClip(), ClipCallTIR, ClipExpected)


def test_clip_from_call_tir_with_a_tensor_operand_is_left_alone():
    @I.ir_module
    class Before:
        @T.prim_func(private=True, s_tir=True)
        def maximum(
            x: T.Buffer((T.int64(2), T.int64(8)), "float32"),
            lo: T.Buffer((), "float32"),
            out: T.Buffer((T.int64(2), T.int64(8)), "float32"),
        ):
            T.func_attr({"tirx.noalias": True})
            for ax0, ax1 in T.grid(T.int64(2), T.int64(8)):
                with T.sblock("T_maximum"):
                    v0, v1 = T.axis.remap("SS", [ax0, ax1])
                    T.reads(x[v0, v1], lo[()])
                    T.writes(out[v0, v1])
                    out[v0, v1] = T.max(x[v0, v1], lo[()])

        @R.function
        def main(x: R.Tensor((2, 8), "float32"), lo: R.Tensor((), "float32")):
            cls = Before
            with R.dataflow():
                y = R.call_tir(cls.maximum, (x, lo), out_ty=R.Tensor((2, 8), "float32"))
                R.output(y)
            return y

    _check(CanonicalizeClip(), Before, None)


def _minmax_module(lo, hi, shape=(2, 8), dtype="float32", bound_shape=()):
    """``minimum(maximum(x, lo), hi)``, either bound None to leave that op out."""

    def const(v):
        return relax.const(np.full(bound_shape, v, dtype), dtype)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            if lo is not None:
                y = bb.emit(relax.op.maximum(y, const(lo)))
            if hi is not None:
                y = bb.emit(relax.op.minimum(y, const(hi)))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get()


@I.ir_module
class ReluExpected:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        with R.dataflow():
            y = R.nn.relu(x)
            R.output(y)
        return y


@I.ir_module
class Relu6Expected:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        with R.dataflow():
            y = R.clip(x, 0.0, 6.0)
            R.output(y)
        return y


@I.ir_module
class FloorExpected:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        with R.dataflow():
            y = R.clip(x, -2.0, FLT_MAX)
            R.output(y)
        return y


@I.ir_module
class CeilExpected:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        with R.dataflow():
            y = R.clip(x, -FLT_MAX, 4.0)
            R.output(y)
        return y


@pytest.mark.parametrize(
    "lo, hi, expected",
    [
        (0.0, None, ReluExpected),
        (0.0, 6.0, Relu6Expected),
        (-2.0, None, FloorExpected),
        (None, 4.0, CeilExpected),
    ],
    ids=["relu", "relu6", "floor", "ceil"],
)
def test_clip_from_minimum_maximum(lo, hi, expected):
    _check(CanonicalizeClip(), _minmax_module(lo, hi), expected)


@I.ir_module
class MinAboveMaxExpected:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        with R.dataflow():
            lv = R.clip(x, 2.0, FLT_MAX)
            y = R.clip(lv, -FLT_MAX, 1.0)
            R.output(y)
        return y


def test_clip_with_min_above_max_keeps_onnx_order():
    """ONNX Clip(min=2, max=1) is 1 everywhere; one R.clip(x, 2, 1) would give 2."""
    _check(CanonicalizeClip(), _minmax_module(2.0, 1.0), MinAboveMaxExpected)


def test_clip_with_a_one_element_bound_of_rank_one():
    _check(CanonicalizeClip(), _minmax_module(0.0, 6.0, bound_shape=(1,)), Relu6Expected)


@pytest.mark.parametrize(
    "lo, hi, kwargs",
    [
        (0.0, 6.0, {"bound_shape": (2, 8)}),  # not a single value: max with a tensor
        (0.0, None, {"shape": (8,), "bound_shape": (1, 1)}),  # broadcasts x to (1, 8)
        (0.0, 6.0, {"dtype": "int32"}),  # clip's open bound (+-FLT_MAX) does not fit an int
        (None, 6.0, {"dtype": "int32"}),
    ],
    ids=["tensor-bound", "rank-raising-bound", "int32", "int32-ceil"],
)
def test_clip_left_alone(lo, hi, kwargs):
    _check(CanonicalizeClip(), _minmax_module(lo, hi, **kwargs), None)


def test_clip_with_non_constant_bounds_is_left_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 8), "float32"), lo: R.Tensor((), "float32")):
            with R.dataflow():
                a = R.maximum(x, lo)
                y = R.minimum(a, R.const(6.0, "float32"))
                R.output(y)
            return y

    @I.ir_module
    class Expected:  # only the constant upper bound becomes a clip
        @R.function
        def main(x: R.Tensor((2, 8), "float32"), lo: R.Tensor((), "float32")):
            with R.dataflow():
                a = R.maximum(x, lo)
                y = R.clip(a, -FLT_MAX, 6.0)
                R.output(y)
            return y

    _check(CanonicalizeClip(), Before, Expected)


# ---------------------------------------------------------------- CanonicalizeGelu


def _gelu_module(sqrt2=np.sqrt(2.0), half=0.5, half_first=False, half_shape=()):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4, 16), "float32")):
            with R.dataflow():
                d = R.divide(x, R.const(sqrt2, "float32"))
                e = R.erf(d)
                a = R.add(e, R.const(1.0, "float32"))
                h = R.const(np.full(half_shape, half, "float32"))
                m = R.multiply(x, h) if half_first else R.multiply(x, a)
                y = R.multiply(m, a) if half_first else R.multiply(m, h)
                R.output(y)
            return y

    return Before


@I.ir_module
class GeluExpected:
    @R.function
    def main(x: R.Tensor((4, 16), "float32")):
        with R.dataflow():
            y = R.nn.gelu(x)
            R.output(y)
        return y


@pytest.mark.parametrize("half_first", [False, True], ids=["x*a*half", "x*half*a"])
def test_gelu_from_erf_form(half_first):
    _check(CanonicalizeGelu(), _gelu_module(half_first=half_first), GeluExpected)


@pytest.mark.parametrize(
    "kwargs",
    [{"sqrt2": 1.5}, {"half": 0.25}, {"half_shape": (1, 1, 1)}],
    ids=["wrong-sqrt2", "wrong-half", "rank-raising-half"],
)
def test_gelu_left_alone(kwargs):
    _check(CanonicalizeGelu(), _gelu_module(**kwargs), None)


# ---------------------------------------------------------------- FoldBatchNormIntoConv

C_OUT = 4
W = RNG.normal(size=(C_OUT, 3, 3, 3)).astype("float32")
GAMMA = RNG.uniform(0.5, 1.5, C_OUT).astype("float32")
BETA = RNG.normal(size=C_OUT).astype("float32")
MEAN = RNG.normal(size=C_OUT).astype("float32")
VAR = RNG.uniform(0.5, 1.5, C_OUT).astype("float32")
BIAS = RNG.normal(size=(1, C_OUT, 1, 1)).astype("float32")
EPS = 1e-3


def _folded(bias=None, gamma=GAMMA, beta=BETA):
    """The weight and bias the fold computes, with the same float64 arithmetic."""
    scale = gamma.astype(np.float64) / np.sqrt(VAR.astype(np.float64) + EPS)
    b = np.zeros(C_OUT) if bias is None else bias.reshape(C_OUT).astype(np.float64)
    new_w = (W.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype("float32")
    new_b = ((b - MEAN) * scale + beta).astype("float32").reshape(1, -1, 1, 1)
    return new_w, new_b


def _conv_bn(
    x_ty=R.Tensor((1, 3, 8, 8), "float32"),
    bias=None,
    training=False,
    center=True,
    scale=True,
    weight_param=False,
):
    """``batch_norm(conv2d(x, W) [+ bias])[0]``; the weight a parameter if asked."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", x_ty)
    w = relax.Var("w", relax.TensorType(W.shape, "float32")) if weight_param else relax.const(W)
    params = [x, w] if weight_param else [x]
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, padding=(1, 1)))
            if bias is not None:
                y = bb.emit(relax.op.add(y, relax.const(bias)))
            consts = [relax.const(a) for a in (GAMMA, BETA, MEAN, VAR)]
            bn = bb.emit(
                relax.op.nn.batch_norm(
                    y, *consts, axis=1, epsilon=EPS, center=center, scale=scale, training=training
                )
            )
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    return bb.get()


def _conv_add_expected(new_w, new_b):
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 8, 8), "float32")):
            with R.dataflow():
                lv = R.nn.conv2d(x, R.const(new_w), padding=(1, 1))
                y = R.add(lv, R.const(new_b))
                R.output(y)
            return y

    return Expected


@pytest.mark.parametrize(
    "bias", [None, BIAS, BIAS.reshape(C_OUT, 1, 1)], ids=["no-bias", "bias-1C11", "bias-C11"]
)
def test_fold_batchnorm(bias):
    expected = _conv_add_expected(*_folded(bias))
    _check(FoldBatchNormIntoConv(), _conv_bn(bias=bias), expected)


def test_fold_batchnorm_without_center_and_scale():
    # center=False ignores beta, scale=False ignores gamma
    expected = _conv_add_expected(*_folded(gamma=np.ones(C_OUT), beta=np.zeros(C_OUT)))
    _check(FoldBatchNormIntoConv(), _conv_bn(center=False, scale=False), expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight_param": True},  # the conv's weight is not a constant
        {"training": True},  # normalizes with the batch's own mean and variance
        {"bias": RNG.normal(size=(8,)).astype("float32")},  # (C,) broadcasts along W, not C
    ],
    ids=["non-constant-weight", "training", "bias-along-W"],
)
def test_fold_batchnorm_left_alone(kwargs):
    _check(FoldBatchNormIntoConv(), _conv_bn(**kwargs), None)


def test_fold_batchnorm_leaves_nhwc_conv():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 8, 3), "float32")):
            with R.dataflow():
                w = R.const(W.transpose(0, 2, 3, 1).copy())
                c = R.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="OHWI")
                ga, be, mu, va = R.const(GAMMA), R.const(BETA), R.const(MEAN), R.const(VAR)
                bn = R.nn.batch_norm(c, ga, be, mu, va, axis=3, training=False)
                y = bn[0]
                R.output(y)
            return y

    _check(FoldBatchNormIntoConv(), Before, None)


def test_fold_batchnorm_leaves_batchnorm_without_conv():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                ga, be, mu, va = R.const(GAMMA), R.const(BETA), R.const(MEAN), R.const(VAR)
                bn = R.nn.batch_norm(x, ga, be, mu, va, axis=1, training=False)
                y = bn[0]
                R.output(y)
            return y

    _check(FoldBatchNormIntoConv(), Before, None)


# ---------------------------------------------------------------- FoldConstantsWithNumpy

A = RNG.normal(size=(2, 3)).astype("float32")
B = RNG.normal(size=(3,)).astype("float32")


@I.ir_module
class NumpyBefore:
    @R.function
    def main(x: R.Tensor((3, 2), "float32")):
        with R.dataflow():
            t = R.permute_dims(R.const(A), axes=[1, 0])
            s = R.add(t, R.const(1.0, "float32"))
            r = R.reshape(R.const(B), R.shape([3, 1]))
            bias = R.where(R.isnan(r), R.const(0.0, "float32"), r)
            y = R.add(R.multiply(x, s), bias)
            R.output(y)
        return y


@I.ir_module
class NumpyExpected:
    @R.function
    def main(x: R.Tensor((3, 2), "float32")):
        with R.dataflow():
            lv = R.multiply(x, R.const(A.T + np.float32(1.0)))
            y = R.add(lv, R.const(B.reshape(3, 1)))
            R.output(y)
        return y


def test_fold_constants_with_numpy():
    _check(FoldConstantsWithNumpy(), NumpyBefore, NumpyExpected)


def test_fold_constants_with_numpy_leaves_ops_it_does_not_know():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                e = R.exp(R.const(A))  # not in its table: FoldConstant's job
                y = R.add(x, e)
                R.output(y)
            return y

    _check(FoldConstantsWithNumpy(), Before, None)


def test_fold_constants_with_numpy_leaves_non_constant_operands():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                y = R.add(R.permute_dims(x, axes=[0, 1]), R.const(A))
                R.output(y)
            return y

    _check(FoldConstantsWithNumpy(), Before, None)


# ---------------------------------------------------------------- FoldConstantCalls


@I.ir_module
class CallsBefore:
    @R.function
    def main(x: R.Tensor((2, 3), "float32")):
        with R.dataflow():
            e = R.exp(R.const(A))
            s = R.sum(e, axis=[0], keepdims=True)
            y = R.add(R.multiply(x, e), s)
            R.output(y)
        return y


def test_fold_constant_calls_matches_fold_constant_on_static_shapes():
    _check(FoldConstantCalls(), CallsBefore, relax.transform.FoldConstant()(CallsBefore))


def test_fold_constant_calls_values():
    after = FoldConstantCalls()(CallsBefore)
    bindings = after["main"].body.blocks[0].bindings
    (binding,) = [b for b in bindings if b.value.op.name == "relax.multiply"]
    np.testing.assert_allclose(binding.value.args[1].value.numpy(), np.exp(A), rtol=1e-6)


def test_fold_constant_calls_leaves_non_constant_calls():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                y = R.exp(R.add(x, R.const(A)))
                R.output(y)
            return y

    _check(FoldConstantCalls(), Before, None)


def test_fold_constant_calls_inlines_constant_bound_variables():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                a = R.const(A)
                y = R.add(x, a)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                y = R.add(x, R.const(A))
                R.output(y)
            return y

    _check(FoldConstantCalls(), Before, Expected)


def test_fold_constant_calls_folds_tensor_to_shape():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                s = R.tensor_to_shape(R.const(np.array([3, 2], "int64"), "int64"))
                y = R.add(x, R.const(1.0, "float32"))
                R.output(s, y)
            return (y, s)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                y = R.add(x, R.const(1.0, "float32"))
                R.output(y)
            return (y, R.shape([3, 2]))

    _check(FoldConstantCalls(), Before, Expected)


def test_fold_constant_calls_leaves_bindings_outside_dataflow_blocks():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            e = R.exp(R.const(A))
            y = R.add(x, e)
            return y

    _check(FoldConstantCalls(), Before, None)


# ---------------------------------------------------------------- RewriteStackSum


def _stack_sum_module(shapes, out_shape, keepdims=False, stack_axis=0):
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", xs):
        with bb.dataflow():
            b = [bb.emit(relax.op.broadcast_to(x, out_shape)) for x in xs]
            st = bb.emit(relax.op.stack(relax.Tuple(b), axis=stack_axis))
            y = bb.emit_output(relax.op.sum(st, axis=[0], keepdims=keepdims))
        bb.emit_func_output(y)
    return bb.get()


@I.ir_module
class Sum2Expected:
    @R.function
    def main(x0: R.Tensor((1, 4, 3, 3), "float32"), x1: R.Tensor((1, 4, 3, 3), "float32")):
        with R.dataflow():
            y = R.add(x0, x1)
            R.output(y)
        return y


@I.ir_module
class Sum3Expected:
    @R.function
    def main(
        x0: R.Tensor((1, 4, 3, 3), "float32"),
        x1: R.Tensor((1, 4, 3, 3), "float32"),
        x2: R.Tensor((1, 4, 3, 3), "float32"),
    ):
        with R.dataflow():
            lv = R.add(x0, x1)
            y = R.add(lv, x2)
            R.output(y)
        return y


@pytest.mark.parametrize("n, expected", [(2, Sum2Expected), (3, Sum3Expected)])
def test_stack_sum_to_adds(n, expected):
    shape = (1, 4, 3, 3)
    _check(RewriteStackSum(), _stack_sum_module([shape] * n, shape), expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shapes": [(1, 4, 3, 3), (1, 4, 1, 1)]},  # a real broadcast
        {"shapes": [(1, 4, 3, 3)] * 2, "keepdims": True},
        {"shapes": [(1, 4, 3, 3)] * 2, "stack_axis": 1},  # sums over another axis
    ],
    ids=["broadcast", "keepdims", "stack-axis-1"],
)
def test_stack_sum_left_alone(kwargs):
    out_shape = (1, 4, 3, 3)
    _check(RewriteStackSum(), _stack_sum_module(out_shape=out_shape, **kwargs), None)
