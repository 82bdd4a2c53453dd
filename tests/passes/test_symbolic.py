"""Passes on modules whose shapes are symbolic (``n``), unknown (``ndim=4``) or MatchCast.

Each pass must rewrite such a module correctly or leave the binding alone, never raise.
TVM's own ``FoldConstant`` fails this (it legalizes every call of a dataflow block, and
legalization asserts "emit_te now only supports Tensor that has ShapeExpr shape");
``FoldConstantCalls`` is the replacement that does not.
"""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_onednn.byoc.partition import prepare_for_onednn
from tvm_onednn.passes import (
    CanonicalizeClip,
    CanonicalizeGelu,
    FoldBatchNormIntoConv,
    FoldConstantCalls,
    FoldConstantsWithNumpy,
    RewriteStackSum,
)

RNG = np.random.default_rng(1)
W = RNG.normal(size=(4, 3, 3, 3)).astype("float32")
BN = [
    RNG.uniform(0.5, 1.5, 4).astype("float32"),
    RNG.normal(size=4).astype("float32"),
    RNG.normal(size=4).astype("float32"),
    RNG.uniform(0.5, 1.5, 4).astype("float32"),
]
SQRT2 = np.float32(np.sqrt(2.0))

PASSES = [
    CanonicalizeClip,
    CanonicalizeGelu,
    FoldBatchNormIntoConv,
    FoldConstantCalls,
    FoldConstantsWithNumpy,
    RewriteStackSum,
]


def _ops(mod: tvm.IRModule) -> list[str]:
    ops = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            ops.append(e.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    return ops


# One module exercising every pass's pattern (conv+BN, clip, erf-GELU, stack-sum, constant
# folding), in three shape flavours.


@I.ir_module
class SymbolicBatch:
    @R.function
    def main(x: R.Tensor(("n", 3, 8, 8), "float32")):
        n = T.int64()
        with R.dataflow():
            w = R.add(R.const(W), R.const(0.0, "float32"))  # folds to a constant
            c = R.nn.conv2d(x, w, padding=(1, 1))
            ga, be, mu, va = R.const(BN[0]), R.const(BN[1]), R.const(BN[2]), R.const(BN[3])
            bn = R.nn.batch_norm(c, ga, be, mu, va, axis=1, training=False)
            b = bn[0]
            lo = R.maximum(b, R.const(0.0, "float32"))
            r = R.minimum(lo, R.const(6.0, "float32"))
            e = R.erf(R.divide(r, R.const(SQRT2)))
            half = R.multiply(r, R.const(0.5, "float32"))
            g = R.multiply(half, R.add(e, R.const(1.0, "float32")))
            s = R.sum(R.stack((R.broadcast_to(g, R.shape([n, 4, 8, 8])), r), axis=0), axis=[0])
            R.output(s)
        return s


@I.ir_module
class UnknownShape:
    @R.function
    def main(x: R.Tensor(ndim=4, dtype="float32")):
        with R.dataflow():
            w = R.add(R.const(W), R.const(0.0, "float32"))
            c = R.nn.conv2d(x, w, padding=(1, 1))
            ga, be, mu, va = R.const(BN[0]), R.const(BN[1]), R.const(BN[2]), R.const(BN[3])
            bn = R.nn.batch_norm(c, ga, be, mu, va, axis=1, training=False)
            b = bn[0]
            lo = R.maximum(b, R.const(0.0, "float32"))
            r = R.minimum(lo, R.const(6.0, "float32"))
            e = R.erf(R.divide(r, R.const(SQRT2)))
            half = R.multiply(r, R.const(0.5, "float32"))
            g = R.multiply(half, R.add(e, R.const(1.0, "float32")))
            s = R.sum(R.stack((g, r), axis=0), axis=[0])
            R.output(s)
        return s


@I.ir_module
class MatchCastShape:
    @R.function
    def main(x: R.Tensor(ndim=4, dtype="float32")):
        n = T.int64()
        h = T.int64()
        with R.dataflow():
            xs = R.match_cast(x, R.Tensor((n, 3, h, h), "float32"))
            w = R.add(R.const(W), R.const(0.0, "float32"))
            c = R.nn.conv2d(xs, w, padding=(1, 1))
            ga, be, mu, va = R.const(BN[0]), R.const(BN[1]), R.const(BN[2]), R.const(BN[3])
            bn = R.nn.batch_norm(c, ga, be, mu, va, axis=1, training=False)
            b = bn[0]
            lo = R.maximum(b, R.const(0.0, "float32"))
            r = R.minimum(lo, R.const(6.0, "float32"))
            e = R.erf(R.divide(r, R.const(SQRT2)))
            half = R.multiply(r, R.const(0.5, "float32"))
            g = R.multiply(half, R.add(e, R.const(1.0, "float32")))
            s = R.sum(R.stack((g, r), axis=0), axis=[0])
            R.output(s)
        return s


MODULES = {
    "symbolic-batch": SymbolicBatch,
    "unknown-shape": UnknownShape,
    "match-cast": MatchCastShape,
}


@pytest.mark.parametrize("module", MODULES.values(), ids=MODULES.keys())
@pytest.mark.parametrize("pass_cls", PASSES, ids=lambda p: p.__name__)
def test_pass_does_not_raise_on_non_static_shapes(pass_cls, module):
    after = pass_cls()(module)  # the autouse fixture checks well-formedness
    relax.analysis.well_formed(after)


@pytest.mark.parametrize("module", MODULES.values(), ids=MODULES.keys())
def test_all_passes_rewrite_non_static_shapes(module):
    mod = module
    for pass_cls in [
        FoldConstantsWithNumpy,
        FoldConstantCalls,
        CanonicalizeClip,
        CanonicalizeGelu,
        RewriteStackSum,
        FoldBatchNormIntoConv,
    ]:
        mod = pass_cls()(mod)
    mod = relax.transform.DeadCodeElimination()(mod)
    ops = _ops(mod)
    assert "relax.nn.batch_norm" not in ops  # folds whatever the batch
    assert {"relax.clip", "relax.nn.gelu"} <= set(ops)
    assert not {"relax.erf", "relax.maximum", "relax.minimum"} & set(ops)
    # stack+sum becomes an add only where the operands' shapes are known to be equal
    assert ("relax.stack" in ops) == (module is UnknownShape)


def test_fold_constant_raises_on_unknown_shapes():
    """Why FoldConstantCalls exists: TVM's FoldConstant on UnknownShape."""
    with pytest.raises(Exception, match="ShapeExpr shape"):
        relax.transform.FoldConstant()(UnknownShape)


def test_fold_constant_calls_on_unknown_shapes():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor(ndim=4, dtype="float32")):
            with R.dataflow():
                w = R.nn.relu(R.const(W))
                c = R.nn.conv2d(x, w)
                y = R.nn.relu(c)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor(ndim=4, dtype="float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(np.maximum(W, 0)))
                y = R.nn.relu(c)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldConstantCalls()(Before), Expected)


def _conv_bn(w, mean):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor(("n", 3, 8, 8), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(w), padding=(1, 1))
                ga, be, mu, va = R.const(BN[0]), R.const(BN[1]), R.const(mean), R.const(BN[3])
                bn = R.nn.batch_norm(c, ga, be, mu, va, axis=1, training=False)
                y = bn[0]
                R.output(y)
            return y

    return Before


def test_fold_batchnorm_with_symbolic_batch():
    before = _conv_bn(W, BN[2])
    scale = BN[0].astype(np.float64) / np.sqrt(BN[3].astype(np.float64) + 1e-5)
    new_w = (W.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype("float32")
    new_b = ((0 - BN[2]) * scale + BN[1]).astype("float32").reshape(1, -1, 1, 1)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor(("n", 3, 8, 8), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(new_w), padding=(1, 1))
                y = R.add(c, R.const(new_b))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldBatchNormIntoConv()(before), Expected)


# prepare_for_onednn as a whole


def _conv_bn_relu_module(x_ty):
    bb = relax.BlockBuilder()
    x = relax.Var("x", x_ty)
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(W), padding=(1, 1)))
            bias = relax.const(RNG.normal(size=(1, 4, 1, 1)).astype("float32"))
            c = bb.emit(relax.op.add(c, bias))
            bn = bb.emit(relax.op.nn.batch_norm(c, *map(relax.const, BN), axis=1, training=False))
            y = bb.emit(relax.op.nn.relu(relax.TupleGetItem(bn, 0)))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get()


def test_prepare_for_onednn_with_symbolic_batch():
    n = tvm.tirx.Var("n", "int64")
    mod = _conv_bn_relu_module(relax.TensorType([n, 3, 16, 16], "float32"))
    prepared = prepare_for_onednn(mod)
    assert _ops(prepared) == ["relax.nn.conv2d", "relax.add", "relax.nn.relu"]


def test_prepare_for_onednn_with_unknown_shape():
    mod = _conv_bn_relu_module(relax.TensorType(ndim=4, dtype="float32"))
    assert _ops(prepare_for_onednn(mod)) == ["relax.nn.conv2d", "relax.add", "relax.nn.relu"]


def test_rewrites_keep_match_cast_variables():
    """The pattern matcher sees through MatchCast; the rewrites must still use ``xs``."""

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor(ndim=4, dtype="float32")):
            n = T.int64()
            with R.dataflow():
                xs = R.match_cast(x, R.Tensor((n, 3, 8, 8), "float32"))
                r = R.maximum(xs, R.const(0.0, "float32"))
                e = R.erf(R.multiply(xs, R.const(1 / SQRT2)))
                one_plus_e = R.add(e, R.const(1.0, "float32"))
                g = R.multiply(xs, R.multiply(one_plus_e, R.const(0.5, "float32")))
                c = R.nn.conv2d(xs, R.const(W), padding=(1, 1))
                ga, be, mu, va = R.const(BN[0]), R.const(BN[1]), R.const(BN[2]), R.const(BN[3])
                bn = R.nn.batch_norm(c, ga, be, mu, va, axis=1, training=False)
                y = (r, g, bn[0])
                R.output(y)
            return y

    scale = BN[0].astype(np.float64) / np.sqrt(BN[3].astype(np.float64) + 1e-5)
    new_w = (W.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype("float32")
    new_b = ((0 - BN[2]) * scale + BN[1]).astype("float32").reshape(1, -1, 1, 1)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor(ndim=4, dtype="float32")):
            n = T.int64()
            with R.dataflow():
                xs = R.match_cast(x, R.Tensor((n, 3, 8, 8), "float32"))
                r = R.nn.relu(xs)
                g = R.nn.gelu(xs)
                c = R.nn.conv2d(xs, R.const(new_w), padding=(1, 1))
                b = R.add(c, R.const(new_b))
                y = (r, g, b)
                R.output(y)
            return y

    after = Before
    for pass_cls in [CanonicalizeClip, CanonicalizeGelu, FoldBatchNormIntoConv]:
        after = pass_cls()(after)
    tvm.ir.assert_structural_equal(relax.transform.DeadCodeElimination()(after), Expected)
