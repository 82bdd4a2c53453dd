"""WellFormedCheck: a pass instrument that checks Relax well-formedness after every pass.

Run passes under ``tvm.transform.PassContext(instruments=[WellFormedCheck()])`` and the
first pass that leaves an ill-formed module (an undefined or twice-defined variable, a
binding whose value does not fit its variable's type, a missing type...) raises
:class:`IllFormedModuleError` naming that pass, instead of failing much later, far away.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax


@tvm_ffi.register_error  # so that it crosses the pass runner (C++) as itself
class IllFormedModuleError(RuntimeError):
    """A pass returned a module that ``relax.analysis.well_formed`` rejects."""


@tvm.instrument.pass_instrument
class WellFormedCheck:
    """Check ``relax.analysis.well_formed`` on the module every pass returns.

    ``check_input`` also checks the module handed to the first pass, so that a module
    ill-formed from the start is not blamed on the pass.
    """

    def __init__(self, check_input: bool = True):
        self.check_input = check_input
        self.checked_passes: list[str] = []

    def run_before_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if self.check_input:
            self.check_input = False
            self._check(mod, f"the input of pass {info.name!r}")

    def run_after_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        self.checked_passes.append(info.name)
        self._check(mod, f"the output of pass {info.name!r}")

    @staticmethod
    def _check(mod: tvm.IRModule, what: str) -> None:
        try:
            relax.analysis.well_formed(mod)
        except Exception as err:  # well_formed raises tvm's own error types
            raise IllFormedModuleError(f"{what} is not well formed: {err}") from err
