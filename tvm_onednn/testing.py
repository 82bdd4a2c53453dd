"""Helpers for tests, tutorials and benchmarks: build a module and run it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

from .target import host_target_spec


def target(spec: dict | None = None) -> tvm.target.Target:
    """A Target from a JSON dict (the only form TVM 0.27 accepts); defaults to this CPU."""
    return tvm.target.Target(spec or host_target_spec())


def build(mod: tvm.IRModule, pipeline: str = "onednn", target_spec: dict | None = None):
    """``tvm.compile`` with the named relax pipeline ("onednn" or TVM's "default")."""
    return tvm.compile(mod, target=target(target_spec), relax_pipeline=pipeline)


class Runner:
    """A compiled module bound to a VM on the CPU; call it with numpy arrays."""

    def __init__(self, executable, func: str = "main"):
        self.vm = relax.VirtualMachine(executable, tvm.cpu())
        self.func = func

    def __call__(self, *inputs: np.ndarray) -> np.ndarray | list[np.ndarray]:
        out = self.vm[self.func](*[tvm.runtime.tensor(np.asarray(x, order="C")) for x in inputs])
        return _to_numpy(out)


def _to_numpy(value):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [_to_numpy(v) for v in value]
    return value.numpy()


def run(mod: tvm.IRModule, inputs: Sequence[np.ndarray], pipeline: str = "onednn"):
    """Build ``mod`` with ``pipeline`` and run ``main`` once on ``inputs``."""
    return Runner(build(mod, pipeline))(*inputs)
