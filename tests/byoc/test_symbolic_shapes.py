"""Symbolic dims (batch, sequence length) through the checks, the JSON and the runtime.

Modules whose inputs have symbolic dims compile once with the "onednn" pipeline and run
at several sizes; the reference is TVM's default LLVM build of the same module.
Regions with symbolic dims are written as version 2 of docs/subgraph-format.md.
"""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_onednn.byoc.summary import offload_summary
from tvm_onednn.pipeline import PHASES, PipelineTrace
from tvm_onednn.testing import Runner, build, target

from ..quantize.helpers import regions
from .builders import RNG, _const, dataflow_function, symbolic_convnet, symbolic_matmul_chain

# float32 oneDNN vs TVM's LLVM kernels: same math, other summation orders.
RTOL, ATOL = 1e-4, 1e-4


def _tensor(name, shape):
    return relax.Var(name, relax.TensorType(shape, "float32"))


def _sym(name):
    return tvm.tirx.Var(name, "int64")


@pytest.fixture(scope="module")
def convnet():
    mod = symbolic_convnet()
    return mod, Runner(build(mod)), Runner(build(mod, "default"))


def test_convnet_chains_are_offloaded_with_a_symbolic_batch(convnet):
    summary = offload_summary(convnet[0])
    assert summary.composites == {
        "onednn.conv2d_bias_relu": 1,  # BatchNorm folded into the conv
        "onednn.conv2d_add_relu": 1,
        "onednn.max_pool2d": 1,
        "onednn.global_avg_pool2d": 1,
        "onednn.matmul_bias": 1,
        "onednn.reshape": 1,  # [n, c, 1, 1] -> [n, c] between the pool and the dense
    }
    assert summary.regions == 1 and summary.kept_ops == {}


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_convnet_runs_at_any_batch_like_tvm(convnet, batch):
    _, onednn, reference = convnet
    x = RNG.standard_normal((batch, 3, 16, 16)).astype("float32")
    out = onednn(x)
    assert out.shape == (batch, 10)
    np.testing.assert_allclose(out, reference(x), rtol=RTOL, atol=ATOL)


def test_region_json_names_the_symbolic_batch():
    (first,) = regions(symbolic_convnet())
    assert first.doc["version"] == 2
    assert first.doc["inputs"][0]["shape"][0] == "n"
    assert all(node["shape"][0] == "n" for node in first.nodes)
    assert first.doc["inputs"][0]["shape"] == ["n", 3, 16, 16]
    assert [n["shape"] for n in first.nodes][-3:] == [["n", 8, 1, 1], ["n", 8], ["n", 10]]
    assert all(isinstance(d, int) for c in first.doc["constants"] for d in c["shape"])


def test_static_region_stays_version_1():
    (region,) = regions(_static_matmul())
    assert region.doc["version"] == 1
    assert region.doc["inputs"][0]["shape"] == [2, 5, 64]


def _static_matmul():
    return dataflow_function(
        [_tensor("a", [2, 5, 64])],
        lambda bb, a: relax.op.nn.relu(relax.op.matmul(a, _const((64, 32)))),
    )


@pytest.fixture(scope="module", params=["gelu", "relu"])
def matmul_chain(request):
    mod = symbolic_matmul_chain(request.param)
    return request.param, mod, Runner(build(mod)), Runner(build(mod, "default"))


def test_matmul_chain_is_one_composite(matmul_chain):
    activation, mod, _, _ = matmul_chain
    summary = offload_summary(mod)
    assert summary.composites == {f"onednn.matmul_bias_{activation}": 1}
    assert summary.num_kept == 0
    (region,) = regions(mod)
    assert region.doc["inputs"][0]["shape"] == ["n", "s", 64]
    assert region.nodes[0]["shape"] == ["n", "s", 32]


@pytest.mark.parametrize("batch, seq", [(1, 7), (3, 32), (16, 128), (2, 1)])
def test_matmul_chain_runs_at_any_batch_and_length_like_tvm(matmul_chain, batch, seq):
    _, _, onednn, reference = matmul_chain
    a = RNG.standard_normal((batch, seq, 64)).astype("float32")
    out = onednn(a)
    assert out.shape == (batch, seq, 32)
    np.testing.assert_allclose(out, reference(a), rtol=RTOL, atol=ATOL)


def test_runtime_b_may_have_symbolic_k_and_n():
    m, k, n = _sym("m"), _sym("k"), _sym("n")
    mod = dataflow_function(
        [_tensor("a", [m, k]), _tensor("b", [k, n])],
        lambda bb, a, b: relax.op.nn.relu(relax.op.matmul(a, b)),
    )
    (region,) = regions(mod)
    assert region.doc["inputs"][1]["shape"] == ["k", "n"]
    assert region.nodes[0]["shape"] == ["m", "n"]
    onednn, reference = Runner(build(mod)), Runner(build(mod, "default"))
    for shape in ((3, 5, 7), (16, 64, 2)):
        a = RNG.standard_normal(shape[:2]).astype("float32")
        b = RNG.standard_normal(shape[1:]).astype("float32")
        np.testing.assert_allclose(onednn(a, b), reference(a, b), rtol=RTOL, atol=ATOL)


def test_two_symbols_of_one_name_get_distinct_names():
    n1, n2 = _sym("n"), _sym("n")
    mod = dataflow_function(
        [_tensor("a", [n1, 8]), _tensor("b", [8, n2])],
        lambda bb, a, b: relax.op.matmul(a, b),
    )
    (region,) = regions(mod)
    assert [i["shape"] for i in region.doc["inputs"]] == [["n", 8], [8, "n_1"]]
    assert region.nodes[0]["shape"] == ["n", "n_1"]


def _reasons(mod, op):
    return dict(offload_summary(mod).reasons.get(op, {}))


def test_symbolic_channel_or_spatial_dims_stay_with_tvm():
    n, c, h = _sym("n"), _sym("c"), _sym("h")
    pool = dataflow_function(
        [_tensor("x", [n, c, 8, 8])], lambda bb, x: relax.op.nn.max_pool2d(x, pool_size=2)
    )
    assert _reasons(pool, "relax.nn.max_pool2d") == {
        "pooling with a symbolic channel/spatial dim (only the batch may be symbolic)": 1
    }
    conv = dataflow_function(
        [_tensor("x", [n, 3, h, h])],
        lambda bb, x: relax.op.nn.conv2d(x, _const((4, 3, 3, 3)), padding=1),
    )
    assert _reasons(conv, "relax.nn.conv2d") == {
        "conv2d with a symbolic channel/spatial dim (only the batch may be symbolic)": 1
    }


def test_symbolic_k_needs_a_run_time_b():
    k = _sym("k")
    const_b = dataflow_function(
        [_tensor("a", [4, k])], lambda bb, a: relax.op.matmul(a, _const((16, 8)))
    )
    assert _reasons(const_b, "relax.matmul") == {
        "matmul with a symbolic K needs a run-time b (a constant b has static dims)": 1
    }
    run_time_b = dataflow_function(
        [_tensor("a", [4, k]), _tensor("w", [k, 8])],
        lambda bb, a, w: relax.op.matmul(a, bb.emit(relax.op.nn.relu(w))),
    )
    assert offload_summary(run_time_b).composites == {"onednn.matmul": 1, "onednn.relu": 1}


def test_an_expression_dim_stays_with_tvm_and_says_why():
    n = _sym("n")
    mod = dataflow_function(
        [_tensor("x", [n, 64])],
        lambda bb, x: relax.op.matmul(
            bb.emit(relax.op.reshape(x, [n * 2, 32])), _const((32, 16))
        ),
    )
    reasons = _reasons(mod, "relax.matmul")
    assert list(reasons) == [
        "dimension n * 2 is an expression, oneDNN regions take plain symbolic variables"
    ]


def test_residual_with_the_output_symbolic_shape_is_fused():
    n = _sym("n")
    mod = dataflow_function(
        [_tensor("x", [n, 4, 6, 6]), _tensor("r", [n, 4, 6, 6])],
        lambda bb, x, r: relax.op.add(
            bb.emit(relax.op.nn.conv2d(x, _const((4, 4, 3, 3)), padding=1)), r
        ),
    )
    assert offload_summary(mod).composites == {"onednn.conv2d_add": 1}
    onednn, reference = Runner(build(mod)), Runner(build(mod, "default"))
    x = RNG.standard_normal((5, 4, 6, 6)).astype("float32")
    r = RNG.standard_normal((5, 4, 6, 6)).astype("float32")
    np.testing.assert_allclose(onednn(x, r), reference(x, r), rtol=RTOL, atol=ATOL)


def test_pipeline_trace_keeps_every_phase_of_a_symbolic_module(tmp_path):
    trace = PipelineTrace(tmp_path)
    mod = symbolic_matmul_chain()
    tvm.compile(mod, target(), relax_pipeline=relax.get_pipeline("onednn", trace=trace))
    assert list(trace.modules) == list(PHASES)
    offloaded = trace.modules["offloaded"]["main"].script()
    assert 'R.call_dps_packed("onednn_0"' in offloaded
    assert "R.Tensor((n, s, 32)" in offloaded  # the output is allocated from n and s
    assert len(list(tmp_path.glob("*.py"))) == len(PHASES)


def test_a_region_with_two_symbolic_outputs_runs_like_tvm():
    n = _sym("n")

    def body(bb, x):
        y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, _const((4, 3, 3, 3)), padding=1)))
        pooled = bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2))
        total = bb.emit(relax.op.sum(bb.emit(relax.op.exp(y)), axis=[2, 3], keepdims=True))
        return relax.op.add(pooled, total)

    mod = dataflow_function([_tensor("x", [n, 3, 8, 8])], body)
    (region,) = regions(mod)
    assert [region.nodes[i]["shape"] for _, i in region.doc["outputs"]] == [
        ["n", 4, 8, 8],
        ["n", 4, 4, 4],
    ]
    onednn, reference = Runner(build(mod)), Runner(build(mod, "default"))
    for batch in (1, 5):
        x = RNG.standard_normal((batch, 3, 8, 8)).astype("float32")
        np.testing.assert_allclose(onednn(x), reference(x), rtol=RTOL, atol=ATOL)
