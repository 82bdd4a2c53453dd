"""CanonicalizeGeluTanh: rewrite the decomposed tanh form of GELU into ``R.nn.gelu_tanh``.

Exporters write the tanh approximation as
``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))``, with ``x^3`` as
``pow(x, 3)`` or ``x * x * x`` and the outer products in several orders. Only that exact
function is rewritten (each constant checked with a relative tolerance of 1e-4); one
``R.nn.gelu_tanh`` is what oneDNN's ``gelu_tanh`` eltwise (and the pattern table) runs.
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.dpl.pattern import DFPattern, is_const, is_op, wildcard

from .. import relax_utils as ru
from .rewrite_helpers import rewrite_relax_functions

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715


def _both(op: str, a: DFPattern, b: DFPattern) -> DFPattern:
    return is_op(op)(a, b) | is_op(op)(b, a)


def _gelu_tanh_pattern() -> tuple[DFPattern, DFPattern, dict[str, DFPattern]]:
    x = wildcard()
    three, cubic, slope, one, half = is_const(), is_const(), is_const(), is_const(), is_const()
    x_squared = is_op("relax.multiply")(x, x)
    x_cubed = is_op("relax.power")(x, three) | _both("relax.multiply", x_squared, x)
    inner = _both("relax.add", x, _both("relax.multiply", x_cubed, cubic))
    tanh = is_op("relax.tanh")(_both("relax.multiply", inner, slope))
    one_plus_tanh = _both("relax.add", tanh, one)
    # (x * (1 + t)) * 0.5  |  (x * 0.5) * (1 + t)  |  x * ((1 + t) * 0.5)
    pattern = (
        _both("relax.multiply", _both("relax.multiply", x, one_plus_tanh), half)
        | _both("relax.multiply", _both("relax.multiply", x, half), one_plus_tanh)
        | _both("relax.multiply", x, _both("relax.multiply", one_plus_tanh, half))
    )
    constants = {"three": three, "cubic": cubic, "slope": slope, "one": one, "half": half}
    return pattern, x, constants


_EXPECTED = {"three": 3.0, "cubic": _CUBIC, "slope": _SQRT_2_OVER_PI, "one": 1.0, "half": 0.5}


def _constants_match(matched: dict, constants: dict[str, DFPattern]) -> bool:
    for name, pattern in constants.items():
        if pattern not in matched:
            continue  # x^3 written as x * x * x has no exponent constant
        value = ru.scalar_value(matched[pattern])
        if value is None or not math.isclose(value, _EXPECTED[name], rel_tol=1e-4):
            return False
    return True


def _rewrite(func: relax.Function) -> relax.Function:
    pattern, x_pattern, constants = _gelu_tanh_pattern()

    def rewrite(expr: relax.Expr, matched) -> relax.Expr:
        x = matched[x_pattern]
        if not tvm_ffi.structural_equal(expr.ty, x.ty):  # a constant broadcasts x
            return expr
        if not _constants_match(matched, constants):
            return expr
        return relax.op.nn.gelu_tanh(x)

    return relax.dpl.rewrite_call(pattern, rewrite, func)


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeGeluTanh")
class CanonicalizeGeluTanh:
    """Replace the decomposed tanh-approximation GELU with ``R.nn.gelu_tanh``."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(mod, _rewrite)
