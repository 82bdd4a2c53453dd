"""The shared shell of our function-level passes."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax


def rewrite_relax_functions(
    mod: tvm.IRModule,
    rewrite: Callable[[relax.Function], relax.Function],
    eliminate_dead_code: bool = True,
) -> tvm.IRModule:
    """A new module with ``rewrite`` applied to every Relax function of ``mod``.

    ``mod`` itself is left untouched; bindings the rewrite made unused are removed.
    """
    updated = {
        gv: rewrite(func) for gv, func in mod.functions.items() if isinstance(func, relax.Function)
    }
    new_mod = tvm.IRModule({**dict(mod.functions.items()), **updated}, attrs=mod.attrs)
    return relax.transform.DeadCodeElimination()(new_mod) if eliminate_dead_code else new_mod
