"""The float32 oneDNN pattern table.

Each entry is a chain (:mod:`tvm_onednn.byoc.chains`) that one oneDNN primitive runs with
post-ops, or a pool. The pattern name is the runtime's exact dispatch key
(``docs/subgraph-format.md``); the checks (:mod:`tvm_onednn.byoc.checks`) reject exactly
what the runtime cannot run, each with the reason logged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

from tvm import relax
from tvm.relax.transform import FusionPattern, PatternCheckContext

from .. import relax_utils as ru
from .chains import (
    ACTIVATIONS,
    BACKEND,
    POOLS,
    ChainSpec,
    Pattern,
    chain_pattern,
    chain_specs,
    pool_name,
    pool_pattern,
)
from .checks import (
    WHY_NOT_OP,
    leaks_intermediate,
    make_check,
    why_not_activation,
    why_not_bias,
    why_not_conv2d_layout,
    why_not_pool,
)
from .tpatterns import (
    transformer_composite_names,
    transformer_table,
    why_not_broadcast_residual,
    why_not_output_scale,
)

__all__ = [
    "ACTIVATIONS",
    "BACKEND",
    "POOLS",
    "WHY_NOT",
    "annotation_map",
    "chain_specs",
    "composite_annotations",
    "composite_names",
    "offload_pattern_table",
    "pattern_table",
    "register",
    "why_not_conv2d_layout",
]

logger = logging.getLogger(__name__)

#: Kept for callers of the earlier name: base op -> its check.
WHY_NOT = WHY_NOT_OP


def composite_names() -> list[str]:
    """All float32 composite names this table can produce (the runtime must know each)."""
    chains_and_pools = [s.name for s in chain_specs()] + [pool_name(p) for p in POOLS]
    return chains_and_pools + transformer_composite_names()


def why_not_chain(
    spec: ChainSpec, ctx: PatternCheckContext, broadcast_residual: bool = False
) -> str | None:
    """Why the runtime cannot run this float32 chain match, or None.

    ``broadcast_residual``: a matmul's residual may broadcast to the output (the offload
    table; the int8 quantizer groups chains with an exact-shape residual only).
    """
    if leaks_intermediate(ctx):
        return "an intermediate value is used outside the chain"
    ann = ctx.annotated_expr
    root = ann["root"]
    reason = WHY_NOT_OP[root.op.name](root)
    if reason:
        return reason
    if "scaled" in ann:
        reason = why_not_output_scale(ann["scaled"], ann["scale"])
        if reason:
            return reason
    out_shape = ru.shape_dims(root)
    if spec.bias:
        reason = why_not_bias(spec.base, ann["bias"], out_shape)
        if reason:
            return reason
    if spec.add:
        residual = ann["residual"]
        if broadcast_residual and spec.base == "matmul":
            reason = why_not_broadcast_residual(residual, ann["residual_add"], root)
            if reason:
                return reason
        elif not ru.same_dims(ru.shape_dims(residual), out_shape) or (
            ru.dtype(residual) != ru.dtype(root)
        ):
            return "the residual must have the output's exact shape and dtype"
    if spec.activation:
        return why_not_activation(spec.activation, ann)
    return None


def why_not_pool_match(ctx: PatternCheckContext) -> str | None:
    return why_not_pool(ctx.annotated_expr["root"])


def pattern_table() -> list[FusionPattern]:
    """The conv2d/matmul chains and pools in priority order (longest chains first, then
    pools): the float32 layers the int8 quantizer plans. :func:`offload_pattern_table`
    is what the partition offloads."""
    return _chain_and_pool_table(extended=False)


def offload_pattern_table() -> list[FusionPattern]:
    """The float32 offload table in priority order: the chains (a matmul may also fuse a
    scalar output scale and a broadcasting residual), pools, then the transformer ops
    (:mod:`tvm_onednn.byoc.tpatterns`), so that a chain keeps its bias, residual and
    activation before a standalone element-wise op could take them."""
    return _chain_and_pool_table(extended=True) + transformer_table()


def _chain_and_pool_table(extended: bool) -> list[FusionPattern]:
    table = []
    for spec in chain_specs():
        why_not = functools.partial(why_not_chain, spec, broadcast_residual=extended)
        check = make_check(spec.name, why_not, logger)
        for residual_first in (False, True) if spec.add else (None,):
            pattern, annotations = chain_pattern(spec, residual_first, scaled=extended)
            table.append(FusionPattern(spec.name, pattern, annotations, check))
    for kind in POOLS:
        name = pool_name(kind)
        pattern, annotations = pool_pattern(kind)
        table.append(
            FusionPattern(name, pattern, annotations, make_check(name, why_not_pool_match, logger))
        )
    return table


def register() -> None:
    """Register the table with TVM's pattern registry under the ``onednn`` prefix."""
    from tvm.relax.backend.pattern_registry import register_patterns

    # get_patterns_with_prefix returns the registry reversed: register lowest priority first.
    # As (name, pattern, annotations, check) tuples: TVM removes those at interpreter exit,
    # but not FusionPattern objects, whose Python check functions then get freed after
    # Python is gone (an abort, "double free or corruption", at exit).
    register_patterns(
        [(p.name, p.pattern, dict(p.annotation_patterns), p.check)
         for p in reversed(offload_pattern_table())]
    )  # fmt: skip


@functools.cache
def annotation_map() -> Mapping[str, Pattern]:
    """Pattern and annotations by float32 composite name (to re-read a composite)."""
    table = {s.name: chain_pattern(s, scaled=True) for s in chain_specs()}
    table.update({pool_name(p): pool_pattern(p) for p in POOLS})
    return table


def composite_annotations(func: relax.Function) -> dict[str, relax.Expr] | None:
    """The annotated expressions (root, lhs, rhs, ...) of a float32 composite function, or
    None when its body does not match the pattern its ``Composite`` name stands for."""
    pattern, annotations = annotation_map()[str(func.attrs["Composite"])]
    return ru.extract_annotations(func, pattern, annotations)
