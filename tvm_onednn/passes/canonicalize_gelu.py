"""CanonicalizeGelu: rewrite the exported erf form of GELU into ``R.nn.gelu``.

Exporters write GELU as ``x * 0.5 * (1 + erf(x / sqrt(2)))`` in several operand
orders; one ``R.nn.gelu`` is what the pattern table (and oneDNN's ``gelu_erf``) fuses.
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.dpl.pattern import DFPattern, is_const, is_op, wildcard

from .. import relax_utils as ru
from .rewrite_helpers import as_call, bound_calls, matched_operand, rewrite_relax_functions


def _commutative(op: str, a: DFPattern, b: DFPattern) -> DFPattern:
    return is_op(op)(a, b) | is_op(op)(b, a)


def _gelu_patterns():
    x = wildcard()
    inv_sqrt2, sqrt2, one, half = is_const(), is_const(), is_const(), is_const()
    scaled = is_op("relax.divide")(x, sqrt2) | _commutative("relax.multiply", x, inv_sqrt2)
    one_plus_erf = _commutative("relax.add", is_op("relax.erf")(scaled), one)
    # (x * (1 + erf)) * 0.5  |  (x * 0.5) * (1 + erf)  |  x * ((1 + erf) * 0.5)
    pattern = (
        _commutative("relax.multiply", _commutative("relax.multiply", x, one_plus_erf), half)
        | _commutative("relax.multiply", _commutative("relax.multiply", x, half), one_plus_erf)
        | _commutative("relax.multiply", x, _commutative("relax.multiply", one_plus_erf, half))
    )
    constants = {"inv_sqrt2": inv_sqrt2, "sqrt2": sqrt2, "one": one, "half": half}
    return pattern, scaled, constants


def _close(value: float | None, expected: float) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=1e-4)


def _rewrite(func: relax.Function) -> relax.Function:
    pattern, scaled, c = _gelu_patterns()
    calls = bound_calls(func)

    def rewrite(expr: relax.Expr, m) -> relax.Expr:
        scale_ok = (c["sqrt2"] in m and _close(ru.scalar_value(m[c["sqrt2"]]), math.sqrt(2))) or (
            c["inv_sqrt2"] in m and _close(ru.scalar_value(m[c["inv_sqrt2"]]), 1 / math.sqrt(2))
        )
        scale = m[c["sqrt2"]] if c["sqrt2"] in m else m[c["inv_sqrt2"]]
        x = matched_operand(as_call(m[scaled], calls), scale)
        if not (
            tvm_ffi.structural_equal(expr.ty, x.ty)  # no constant broadcasts x
            and scale_ok
            and _close(ru.scalar_value(m[c["one"]]), 1.0)
            and _close(ru.scalar_value(m[c["half"]]), 0.5)
        ):
            return expr
        return relax.op.nn.gelu(x)

    return relax.dpl.rewrite_call(pattern, rewrite, func)


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeGelu")
class CanonicalizeGelu:
    """Replace the decomposed erf GELU with ``R.nn.gelu``."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_relax_functions(mod, _rewrite, eliminate_dead_code=False)
