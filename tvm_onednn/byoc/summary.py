"""offload_summary: what a partition sends to oneDNN, what stays with TVM, and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import tvm
from tvm import relax

from .chains import BACKEND
from .checks import WHY_NOT_OP
from .partition import partition_for_onednn
from .tpatterns import WHY_NOT_STANDALONE

# Ops that run in oneDNN only as a post-op (bias, residual add, activation) of a chain.
EPILOGUE_OPS = frozenset(
    {
        "relax.add",
        "relax.multiply",
        "relax.divide",
        "relax.nn.relu",
        "relax.clip",
        "relax.sigmoid",
        "relax.tanh",
        "relax.nn.gelu",
        "relax.nn.gelu_tanh",
        "relax.nn.silu",
        "relax.nn.leakyrelu",
    }
)


@dataclass
class OffloadSummary:
    """Counts of Relax ops by where they run, with reasons for kept fusable ops."""

    regions: int = 0
    composites: Counter = field(default_factory=Counter)  # composite name -> count
    offloaded_ops: Counter = field(default_factory=Counter)  # relax op -> count in regions
    kept_ops: Counter = field(default_factory=Counter)  # relax op -> count left to TVM
    reasons: dict[str, Counter] = field(default_factory=dict)  # relax op -> reason -> count

    @property
    def num_offloaded(self) -> int:
        return sum(self.offloaded_ops.values())

    @property
    def num_kept(self) -> int:
        return sum(self.kept_ops.values())

    def as_dict(self) -> dict:
        return {
            "regions": self.regions,
            "composites": dict(self.composites),
            "offloaded_ops": dict(self.offloaded_ops),
            "kept_ops": dict(self.kept_ops),
            "reasons": {op: dict(r) for op, r in self.reasons.items()},
        }

    def __str__(self) -> str:
        lines = [
            f"oneDNN regions: {self.regions}; ops offloaded: {self.num_offloaded}, "
            f"kept with TVM: {self.num_kept}",
            "offloaded composites:",
        ]
        lines += [f"  {n:>4} x {name}" for name, n in sorted(self.composites.items())]
        if self.kept_ops:
            lines.append("kept with TVM:")
            for op, n in sorted(self.kept_ops.items()):
                lines.append(f"  {n:>4} x {op}")
                for reason, count in sorted(self.reasons.get(op, {}).items()):
                    lines.append(f"         {count} because {reason}")
        return "\n".join(lines)


def _op_name(call: relax.Call) -> str | None:
    if isinstance(call.op, tvm.ir.Op):
        return call.op.name
    return None


def _calls(expr: relax.Expr) -> list[relax.Call]:
    calls: list[relax.Call] = []
    relax.analysis.post_order_visit(
        expr, lambda e: calls.append(e) if isinstance(e, relax.Call) else None
    )
    return calls


def _composite_calls(region: relax.Function) -> list[tuple[str, relax.Function]]:
    """(composite name, function) of every composite call in a region, one per call."""
    composites: dict[relax.Var, relax.Function] = {}
    calls = []
    for block in region.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Function) and value.attrs and "Composite" in value.attrs:
                composites[binding.var] = value
            elif isinstance(value, relax.Call) and value.op in composites:
                composite = composites[value.op]
                calls.append((str(composite.attrs["Composite"]), composite))
    return calls


OUTSIDE_DATAFLOW = "it is outside a dataflow block (patterns are matched inside them only)"


NOT_WORTH_A_REGION = (
    "alone (no conv2d, matmul, pool, layer_norm or softmax region next to it) it is not "
    "worth a oneDNN call"
)
NO_PATTERN_FITS = "no pattern fits its neighbours (or one leaks a value)"
#: Heavy ops (regions are built around them) of the transformer table.
_HEAVY_STANDALONE = ("relax.nn.layer_norm", "relax.nn.softmax")


def _kept_reason(op: str, call: relax.Call, in_dataflow: bool) -> str:
    if not in_dataflow:
        return OUTSIDE_DATAFLOW
    why_not = WHY_NOT_OP.get(op)
    if why_not is not None:
        return why_not(call) or NO_PATTERN_FITS
    why_not = WHY_NOT_STANDALONE.get(op)
    if why_not is not None:
        reason = why_not(call)
        if reason:
            return reason
        return NO_PATTERN_FITS if op in _HEAVY_STANDALONE else NOT_WORTH_A_REGION
    if op in EPILOGUE_OPS:
        return "oneDNN runs it only fused after a conv2d/matmul, and none fits here"
    return "oneDNN has no pattern for this op"


def _calls_with_context(func: relax.Function) -> list[tuple[relax.Call, bool]]:
    """Every call in ``func`` with whether it sits in a dataflow block."""
    if not isinstance(func.body, relax.SeqExpr):
        return [(call, True) for call in _calls(func)]
    found = []
    for block in func.body.blocks:
        in_dataflow = isinstance(block, relax.DataflowBlock)
        for binding in block.bindings:
            found += [(call, in_dataflow) for call in _calls(binding.value)]
    return found + [(call, True) for call in _calls(func.body.body)]


def summarize_partitioned(mod: tvm.IRModule) -> OffloadSummary:
    """Summarize a module already partitioned by ``partition_for_onednn``.

    Counts call sites: a region function called twice (identical regions share one
    function) counts as two regions, and its ops twice.
    """
    summary = OffloadSummary()
    regions = {
        gv: func
        for gv, func in mod.functions.items()
        if isinstance(func, relax.Function) and (func.attrs or {}).get("Codegen") == BACKEND
    }
    composites_of = {gv: _composite_calls(func) for gv, func in regions.items()}
    for gv, func in mod.functions.items():
        attrs = func.attrs or {}
        if not isinstance(func, relax.Function) or gv in regions or "Composite" in attrs:
            continue
        for call, in_dataflow in _calls_with_context(func):
            if isinstance(call.op, tvm.ir.GlobalVar) and call.op in regions:
                summary.regions += 1
                for name, composite in composites_of[call.op]:
                    summary.composites[name] += 1
                    summary.offloaded_ops.update(
                        op for op in map(_op_name, _calls(composite)) if op is not None
                    )
                continue
            op = _op_name(call)
            if op is None or op.startswith("relax.call_") or op == "relax.call_dps_packed":
                continue
            summary.kept_ops[op] += 1
            reason = _kept_reason(op, call, in_dataflow)
            summary.reasons.setdefault(op, Counter())[reason] += 1
    return summary


def offload_summary(mod: tvm.IRModule) -> OffloadSummary:
    """Partition ``mod`` (not modified) and report which ops go to oneDNN and why others stay.

    ``print(offload_summary(mod))`` gives a table; ``.as_dict()`` the same as data.
    """
    return summarize_partitioned(partition_for_onednn(mod))
