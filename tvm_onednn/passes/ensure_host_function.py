"""EnsureHostFunction: a module whose every op went to oneDNN still gets a compiled host library.

When nothing is left for TVM, the lowered module has no TIR PrimFunc, and ``relax.build``
links the oneDNN modules under an empty C *source* module (``kind == "c"``, source ``;``).
A C source module is not runnable, so every ``relax.VirtualMachine(executable, ...)`` then
calls ``executable.jit()``, which writes a shared library with the system C compiler and
``dlopen``s it: ~270 ms per VM for MobileNetV2, a compiler needed at run time, and the
loaded library is never freed, taking the oneDNN module with it (its weights, packed weights
and buffers: ~50 MiB for MobileNetV2, per executable). This pass adds one empty PrimFunc
(:data:`HOST_FUNCTION`) to such a module, so LLVM compiles a real host library, which runs
as is. A module that keeps any PrimFunc is returned unchanged.
"""

from __future__ import annotations

import tvm
from tvm import tirx

#: The global symbol of the empty PrimFunc (never called).
HOST_FUNCTION = "__tvm_onednn_host"


@tvm.transform.module_pass(opt_level=0, name="EnsureHostFunction")
def EnsureHostFunction(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """``mod`` plus an empty PrimFunc when it has none (see the module docstring)."""
    if any(isinstance(func, tirx.PrimFunc) for func in mod.functions.values()):
        return mod
    body = tirx.Evaluate(tirx.const(0, "int32"))
    func = tirx.PrimFunc([], body).with_attr("global_symbol", HOST_FUNCTION)
    out = tvm.IRModule(mod.functions, attrs=mod.attrs, global_infos=mod.global_infos)
    out[HOST_FUNCTION] = func
    return out
