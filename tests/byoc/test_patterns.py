"""Each pattern: offloaded under its exact composite name, numerics vs TVM's own build."""

import numpy as np
import pytest

import tvm_onednn
from tvm_onednn.byoc.patterns import ACTIVATIONS, composite_names
from tvm_onednn.testing import run

from .builders import conv2d_module, matmul_module, pool_module

# fp32 kernels reassociate sums differently from TVM's loops.
RTOL, ATOL = 1e-4, 1e-4


def _composites(mod):
    return dict(tvm_onednn.offload_summary(mod).composites)


def _check(mod, inputs, expected_composites, rtol=RTOL, atol=ATOL):
    assert _composites(mod) == expected_composites
    expected = run(mod, inputs, pipeline="default")
    actual = run(mod, inputs, pipeline="onednn")
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def test_runtime_knows_every_composite():
    assert set(composite_names()) <= set(tvm_onednn._ffi_api.supported_composites())


@pytest.mark.parametrize("activation", [*ACTIVATIONS, None])
@pytest.mark.parametrize("bias, add", [(True, True), (True, False), (False, True), (False, False)])
def test_conv2d_chains(bias, add, activation):
    mod, inputs = conv2d_module(bias=bias, add=add, activation=activation)
    name = "_".join(
        ["onednn.conv2d"] + ["bias"] * bias + ["add"] * add + ([activation] if activation else [])
    )
    _check(mod, inputs, {name: 1})


@pytest.mark.parametrize(
    "config",
    [
        dict(strides=(2, 2)),
        dict(padding=(0, 1, 2, 1)),
        dict(dilation=(2, 2), padding=(2, 2, 2, 2)),
        dict(groups=4),
        dict(groups=16, out_channels=16),  # depthwise
        dict(groups=16, out_channels=32),  # depthwise with channel multiplier
        dict(kernel=(1, 1), padding=(0, 0, 0, 0), out_channels=40),
        dict(kernel=(7, 7), strides=(2, 2), padding=(3, 3, 3, 3), data_shape=(2, 3, 20, 20)),
    ],
)
def test_conv2d_geometry(config):
    mod, inputs = conv2d_module(**config)
    _check(mod, inputs, {"onednn.conv2d_bias_relu": 1})


@pytest.mark.parametrize("activation", [*ACTIVATIONS, None])
@pytest.mark.parametrize("bias, add", [(True, True), (True, False), (False, True), (False, False)])
def test_matmul_chains(bias, add, activation):
    mod, inputs = matmul_module(bias=bias, add=add, activation=activation)
    name = "_".join(
        ["onednn.matmul"] + ["bias"] * bias + ["add"] * add + ([activation] if activation else [])
    )
    _check(mod, inputs, {name: 1})


@pytest.mark.parametrize(
    "a_shape, b_shape, const_b",
    [
        ((2, 8, 32), (32, 16), True),  # batched activations, 2-D weights
        ((2, 3, 8, 32), (32, 16), True),
        ((2, 8, 32), (2, 32, 16), False),  # attention-style: both operands at run time
        ((8, 32), (32, 16), False),
    ],
)
def test_matmul_shapes(a_shape, b_shape, const_b):
    mod, inputs = matmul_module(a_shape, b_shape, const_b=const_b, bias=False, activation=None)
    _check(mod, inputs, {"onednn.matmul": 1})


@pytest.mark.parametrize(
    "kind, attrs, composite",
    [
        ("max_pool2d", dict(pool_size=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1)), "max_pool2d"),
        ("max_pool2d", dict(pool_size=(2, 2), strides=(2, 2), ceil_mode=True), "max_pool2d"),
        ("max_pool2d", dict(pool_size=(3, 3), dilation=(2, 2)), "max_pool2d"),
        ("avg_pool2d", dict(pool_size=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1)), "avg_pool2d"),
        (
            "avg_pool2d",
            dict(pool_size=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1), count_include_pad=True),
            "avg_pool2d",
        ),
        ("avg_pool2d", dict(pool_size=(2, 2), strides=(2, 2), ceil_mode=True), "avg_pool2d"),
        ("mean", {}, "global_avg_pool2d"),
        ("adaptive", {}, "global_avg_pool2d"),
    ],
)
def test_pools(kind, attrs, composite):
    mod, inputs = pool_module(kind, **attrs)
    _check(mod, inputs, {f"onednn.{composite}": 1})


def test_register_with_tvm_pattern_registry_exits_cleanly():
    """``register()`` puts the table in TVM's registry, highest priority first as TVM reads
    it, and the interpreter exits with 0 afterwards (TVM frees Python check functions of
    registered FusionPattern objects after Python is gone; tuples it cleans up at exit)."""
    import subprocess
    import sys

    code = (
        "from tvm.relax.backend.pattern_registry import get_patterns_with_prefix\n"
        "from tvm_onednn.byoc.patterns import offload_pattern_table, register\n"
        "register()\n"
        "names = [p.name for p in get_patterns_with_prefix('onednn')]\n"
        "assert names == [p.name for p in offload_pattern_table()], names[:3]\n"
        "print('ok', len(names))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.startswith("ok "), proc.stdout
