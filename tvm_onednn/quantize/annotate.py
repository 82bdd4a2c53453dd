"""Find the quantizable layers of a prepared module and the tensors that need ranges.

Layers are found on the *prepared* module (``prepare_for_onednn``: BatchNorm folded, clip and
GELU canonical) after grouping it with the float32 pattern table, so a layer is exactly one
oneDNN chain ``op -> [+ bias] -> [+ residual] -> [activation]`` (or one pool), the same
grouping as :func:`tvm_onednn.byoc.patterns.chain_specs`.

Layer names are ``<kind>_<i>``: ``kind`` is ``conv2d``, ``matmul``, ``max_pool2d``,
``avg_pool2d`` or ``global_avg_pool2d``; ``i`` counts that kind in graph order (binding order
of ``main``), from 0. The names depend only on the model, so they are stable across runs and
can be passed to ``exclude_layers``. :func:`quantizable_layers` lists them.

Which layers are quantized:

* conv2d (NCHW data, OIHW constant weights, float32) and matmul with a constant 2-D ``[K, N]``
  weight (finite weights), when a float32 chain holds them and no exclusion names them;
* max / avg / global-average pools whose input is the output of a quantized layer (and whose
  output stays inside the dataflow block).

Ranges are needed for the data input of every quantized layer and for the output of every
quantized chain that writes int8 (all its users are quantized layers). A chain with any
float32 user writes float32 directly. A quantized pool's output reuses its input's range.
Range names: ``<layer>_output`` for a layer's output, ``<layer>_input`` for any other tensor,
named after its first quantized user.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from .. import relax_utils as ru
from ..byoc.partition import prepare_for_onednn
from ..byoc.patterns import POOLS, WHY_NOT, chain_specs, composite_annotations, pattern_table
from .inline import composite_of

__all__ = [
    "OPERATOR_GROUPS",
    "Layer",
    "LayerTable",
    "QuantPlan",
    "REASON_KINDS",
    "STEM_REASON",
    "float_stem",
    "group_chains",
    "plan_quantization",
    "quantizable_layers",
    "replan",
    "without_ranges",
]

logger = logging.getLogger(__name__)

CHAIN_KINDS = ("conv2d", "matmul")
#: ``exclude_operators`` values and the layer kinds each one excludes.
OPERATOR_GROUPS: dict[str, tuple[str, ...]] = {
    "conv2d": ("conv2d",),
    "matmul": ("matmul",),
    "dense": ("matmul",),
    "pool": POOLS,
    **{kind: (kind,) for kind in POOLS},
}
_RAW_KINDS = {
    "relax.nn.conv2d": "conv2d",
    "relax.matmul": "matmul",
    "relax.nn.max_pool2d": "max_pool2d",
    "relax.nn.avg_pool2d": "avg_pool2d",
    "relax.nn.adaptive_avg_pool2d": "global_avg_pool2d",
}
_CHAIN_SPECS = {spec.name: spec for spec in chain_specs()}
_NONNEGATIVE_ACTIVATIONS = ("relu", "sigmoid")
_POOL_UNDECIDED = "(pool: decided once its producer is)"

#: Why a layer stays float32, by kind: ``excluded`` (``exclude_layers`` & co.),
#: ``unsupported`` (no int8 oneDNN chain runs it), ``input`` (a pool whose input is not
#: int8), ``calibration`` (no usable calibration range for a tensor it needs).
REASON_KINDS = ("excluded", "unsupported", "input", "calibration")
#: Why a matmul of two activations (attention's Q·Kᵀ and P·V) stays float32.
ACTIVATION_MATMUL_REASON = "both operands are activations (no constant weight)"
#: Why a matmul whose constant weight is batched or a vector stays float32.
WEIGHT_NOT_2D_REASON = "its constant weight is not 2-D [K, N]"


@dataclass(frozen=True)
class Layer:
    """One conv2d / matmul chain or pool of the model, as the quantizer sees it.

    Attributes:
        name: stable name (``conv2d_0``, ``matmul_1``, ``max_pool2d_0``...).
        kind: ``conv2d``, ``matmul``, ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d``.
        chain: the float32 composite holding it (``onednn.conv2d_bias_relu``), or None.
        quantized: whether it runs in int8.
        reason: why it stays float32 (None when quantized).
        output_dtype: ``"int8"`` when a quantized layer writes int8 (the exact u8/s8 is
            chosen from the calibrated range), ``"float32"`` otherwise.
        reason_kind: what kind of reason keeps it float32 (None when quantized): one of
            :data:`REASON_KINDS`, or ``"stem"`` (:func:`float_stem`).
    """

    name: str
    kind: str
    chain: str | None
    quantized: bool
    reason: str | None
    output_dtype: str = "float32"
    reason_kind: str | None = None


@dataclass(frozen=True)
class Site:
    """Where a layer sits in the grouped module (internal to the quantizer)."""

    layer: Layer
    var: relax.Var  # its binding in main
    func: relax.Function | None  # the composite, None for a bare op
    data: relax.Expr | None  # main-level data operand
    residual: relax.Expr | None  # main-level residual operand (chains with _add)
    annotated: dict  # composite-level annotations (root, rhs, bias, activation...)


@dataclass(frozen=True)
class Observed:
    """A float32 tensor whose range calibration provides."""

    name: str
    var: relax.Var  # the tensor in the grouped module's main (a binding or a parameter)
    op_name: str  # what produces it (``collector.collect``'s op_name)
    nonnegative: bool  # provably >= 0 (ReLU-like output): uint8 without calibration


@dataclass
class QuantPlan:
    """What to quantize in ``module`` (the prepared module with chains grouped)."""

    module: tvm.IRModule
    layers: list[Layer]
    sites: dict[relax.Var, Site]
    observed: dict[str, Observed]  # range name -> tensor, in graph order
    range_of: dict[relax.Var, str]  # tensor -> the range its int8 form uses
    int8_outputs: set[relax.Var] = field(default_factory=set)  # layers writing int8
    float_read: set[relax.Var] = field(default_factory=set)  # ... also read by float32 ops
    exclusions: _Exclusions | None = None  # what the user excluded (kept for replan)

    @property
    def range_names(self) -> list[str]:
        """Names of the tensors calibration must provide a range for."""
        return list(self.observed)

    def site(self, var: relax.Var) -> Site | None:
        return self.sites.get(var)


class LayerTable(list):
    """``list[Layer]`` that prints as a table (like ``offload_summary``)."""

    def __str__(self) -> str:
        if not self:
            return "no conv2d / matmul / pooling layers"
        quantized = sum(layer.quantized for layer in self)
        lines = [f"layers: {len(self)}, quantized: {quantized}"]
        width = max(len(layer.name) for layer in self)
        for layer in self:
            where = "int8 " if layer.quantized else "fp32 "
            detail = layer.chain or "(no oneDNN chain)"
            if layer.quantized:
                detail += f" -> {layer.output_dtype} output"
            else:
                detail += f"  [{layer.reason}]"
            lines.append(f"  {layer.name:<{width}}  {where} {detail}")
        return "\n".join(lines)

    def names(self, quantized: bool | None = None) -> list[str]:
        """Layer names, optionally only the (non-)quantized ones."""
        return [l.name for l in self if quantized is None or l.quantized == quantized]


# ----------------------------------------------------------------------------------------


def group_chains(prepared: tvm.IRModule) -> tvm.IRModule:
    """Wrap every float32 chain and pool of ``main`` in a composite function.

    Only ``main`` is planned and rewritten (its composites are inlined back afterwards), so
    the other functions of the module keep their prepared, ungrouped bodies.
    """
    grouped = relax.transform.FuseOpsByPattern(
        pattern_table(), bind_constants=True, annotate_codegen=False
    )(prepared)
    for gv, func in prepared.functions.items():
        if gv.name_hint != "main" and isinstance(func, relax.Function):
            grouped[gv] = func
    return grouped


def _kind_of(composite: str) -> str:
    spec = _CHAIN_SPECS.get(composite)
    return spec.base if spec else composite.split(".", 1)[1]


def _why_not_int8_chain(kind: str, annotated: dict, data: relax.Expr | None) -> str | None:
    """Why an int8 chain cannot take this float32 conv2d / matmul chain, or None."""
    weight = annotated["rhs"]
    if not isinstance(data, relax.Var):
        if kind == "matmul" and ru.is_constant(annotated.get("lhs")) and not ru.is_constant(weight):
            return "the constant is the first operand (int8 matmul takes x @ W)"
        return "its input is a constant"
    if kind == "matmul":
        if not ru.is_constant(weight):
            return ACTIVATION_MATMUL_REASON
        shape = ru.static_shape(weight)
        if shape is None or len(shape) != 2:
            return WEIGHT_NOT_2D_REASON
    if ru.is_constant(weight) and not np.isfinite(ru.constant_array(weight)).all():
        return "its weights hold non-finite values (inf or NaN)"
    return None


class _Exclusions:
    """``exclude_layers`` / ``exclude_layers_match`` / ``exclude_operators``, validated."""

    def __init__(
        self,
        layers: Iterable[str] | None,
        layers_match: Iterable[str] | None,
        operators: Iterable[str] | None,
    ):
        self.layers = set(_names("exclude_layers", layers))
        self.patterns = [re.compile(p) for p in _names("exclude_layers_match", layers_match)]
        ops = _names("exclude_operators", operators)
        unknown = sorted(set(ops) - set(OPERATOR_GROUPS))
        if unknown:
            raise ValueError(
                f"unknown exclude_operators {unknown}; known: {sorted(OPERATOR_GROUPS)}"
            )
        self.kinds = {kind for op in ops for kind in OPERATOR_GROUPS[op]}
        self.keep_float: dict[str, str] = {}  # layer -> reason, decided by the quantizer

    def with_keep_float(self, keep_float: Mapping[str, str]) -> _Exclusions:
        """A copy that also keeps ``keep_float`` (layer name -> reason) in float32."""
        new = copy.copy(self)
        new.keep_float = {**self.keep_float, **keep_float}
        return new

    def reason(self, name: str, kind: str) -> str | None:
        if name in self.layers:
            return "excluded by exclude_layers"
        for pattern in self.patterns:
            if pattern.search(name):
                return f"excluded by exclude_layers_match {pattern.pattern!r}"
        if kind in self.kinds:
            return "excluded by exclude_operators"
        return None

    def check_known(self, names: Sequence[str]) -> None:
        unknown = sorted(self.layers - set(names))
        if unknown:
            raise ValueError(f"exclude_layers names unknown layers {unknown}; layers: {names}")


def _names(what: str, values: Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    values = list(values)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"{what} must be a list of str")
    return values


class _Planner:
    """Walks ``main`` of the grouped module once and decides everything."""

    def __init__(self, module: tvm.IRModule, exclusions: _Exclusions):
        self.module = module
        self.exclusions = exclusions
        self.main = module["main"]
        self.bindings = [b for block in self.main.body.blocks for b in block.bindings]
        self.outside_dataflow = {
            b.var
            for block in self.main.body.blocks
            if not isinstance(block, relax.DataflowBlock)
            for b in block.bindings
        }
        self.producers = {b.var: b for b in self.bindings}
        self.sites: dict[relax.Var, Site] = {}
        self.uses: dict[relax.Var, list[tuple[Site | None, str]]] = {}

    def plan(self) -> QuantPlan:
        counters: dict[str, int] = {}
        for binding in self.bindings:
            site = self._site(binding, counters)
            if site is not None:
                self.sites[binding.var] = site
        self.exclusions.check_known([s.layer.name for s in self.sites.values()])
        self._decide_pools()
        self._collect_uses()
        int8 = self._int8_outputs()
        self._mark_outputs(int8)
        observed, range_of = self._ranges(int8)
        layers = [s.layer for s in self.sites.values()]
        float_read = {
            var for var in int8 if any(user is None for user, _ in self.uses.get(var, []))
        }
        return QuantPlan(
            self.module,
            layers,
            dict(self.sites),
            observed,
            range_of,
            int8,
            float_read,
            self.exclusions,
        )

    # --- layers ------------------------------------------------------------------------

    def _site(self, binding, counters: dict[str, int]) -> Site | None:
        value = binding.value
        func = composite_of(self.module, value)
        if func is not None:
            chain = str(func.attrs["Composite"])
            kind = _kind_of(chain)
            annotated = composite_annotations(func)
            if annotated is None:  # a table/annotation mismatch: keep it float32, say so
                return self._unreadable(binding, counters, kind, chain)
            params = dict(zip(func.params, value.args))
            data = params.get(annotated.get("lhs"))
            residual = params.get(annotated.get("residual"), annotated.get("residual"))
        elif isinstance(value, relax.Call) and getattr(value.op, "name", None) in _RAW_KINDS:
            chain, kind, annotated = None, _RAW_KINDS[value.op.name], {}
            data, residual = value.args[0], None
        else:
            return None
        name = self._next_name(kind, counters)
        try:
            reason_kind, reason = self._chain_reason(name, kind, binding, func, annotated, data)
        except Exception as err:  # noqa: BLE001 (an unforeseen form: float32, not a crash)
            logger.warning("quantize: %s (%s) kept float32: %r", name, chain, err)
            reason_kind, reason = "unsupported", f"the quantizer cannot analyse it ({err!r})"
        layer = Layer(name, kind, chain, reason is None, reason, reason_kind=reason_kind)
        return Site(layer, binding.var, func, data, residual if chain else None, annotated)

    @staticmethod
    def _next_name(kind: str, counters: dict[str, int]) -> str:
        name = f"{kind}_{counters.get(kind, 0)}"
        counters[kind] = counters.get(kind, 0) + 1
        return name

    def _unreadable(self, binding, counters, kind: str, chain: str) -> Site:
        name = self._next_name(kind, counters)
        reason = f"the quantizer cannot read its composite {chain} (pattern mismatch)"
        logger.warning("quantize: %s kept float32: %s", name, reason)
        layer = Layer(name, kind, chain, False, reason, reason_kind="unsupported")
        return Site(layer, binding.var, None, None, None, {})

    def _chain_reason(self, name, kind, binding, func, annotated, data):
        """``(reason kind, reason)`` that keeps the layer float32, or ``(None, None)``."""
        if func is None:
            if binding.var in self.outside_dataflow:
                return "unsupported", "it is outside a dataflow block (chains are fused in those)"
            value = binding.value
            why_not = WHY_NOT.get(value.op.name)
            reason = why_not(value) if why_not else None
            reason = reason or "no oneDNN chain fits it (or it leaks an intermediate value)"
            return "unsupported", reason
        excluded = self.exclusions.reason(name, kind)
        if excluded:
            return "excluded", excluded
        kept = self.exclusions.keep_float.get(name)
        if kept:
            return ("stem" if kept == STEM_REASON else "calibration"), kept
        if kind not in CHAIN_KINDS:
            return "input", _POOL_UNDECIDED
        reason = _why_not_int8_chain(kind, annotated, data)
        return ("unsupported", reason) if reason else (None, None)

    def _decide_pools(self) -> None:
        for var, site in list(self.sites.items()):
            if site.layer.reason != _POOL_UNDECIDED:
                continue
            producer = self.sites.get(site.data)
            kind = "input"
            if producer is None or not producer.layer.quantized:
                reason = "its input is not quantized"
            elif not isinstance(var, relax.DataflowVar):
                kind, reason = "unsupported", "its output leaves the dataflow block"
            else:
                kind = reason = None
            self._replace(var, quantized=reason is None, reason=reason, reason_kind=kind)

    def _replace(self, var: relax.Var, **changes) -> None:
        site = self.sites[var]
        self.sites[var] = dataclasses.replace(
            site, layer=dataclasses.replace(site.layer, **changes)
        )

    # --- uses and output dtypes ----------------------------------------------------------

    def _use(self, var: relax.Expr, site: Site | None, role: str) -> None:
        if isinstance(var, relax.Var):
            self.uses.setdefault(var, []).append((site, role))

    def _collect_uses(self) -> None:
        for binding in self.bindings:
            site = self.sites.get(binding.var)
            if site is not None and site.layer.quantized:
                self._use(site.data, site, "data")
                if site.residual is not None:
                    self._use(site.residual, site, "residual")
                for arg in binding.value.args:
                    if not arg.same_as(site.data) and not arg.same_as(site.residual):
                        self._use(arg, None, "other")
                continue
            for var in relax.analysis.free_vars(binding.value):
                self._use(var, None, "other")
        for var in relax.analysis.free_vars(self.main.body.body):
            self._use(var, None, "other")

    def _int8_outputs(self) -> set[relax.Var]:
        int8 = set()
        for var, site in self.sites.items():
            if not site.layer.quantized:
                continue
            uses = self.uses.get(var, [])
            if site.layer.kind not in CHAIN_KINDS:
                int8.add(var)  # int8 pools keep their input dtype
            elif (
                isinstance(var, relax.DataflowVar)
                and uses
                and all(user is not None for user, _ in uses)
            ):
                int8.add(var)
        return int8

    def _mark_outputs(self, int8: set[relax.Var]) -> None:
        for var in int8:
            self._replace(var, output_dtype="int8")

    # --- ranges --------------------------------------------------------------------------

    def _source(self, var: relax.Var) -> relax.Var:
        """The tensor whose range ``var``'s int8 form uses (through int8 pools)."""
        site = self.sites.get(var)
        while site is not None and site.layer.quantized and site.layer.kind not in CHAIN_KINDS:
            var = site.data
            site = self.sites.get(var)
        return var

    def _ranges(self, int8: set[relax.Var]):
        observed: dict[str, Observed] = {}
        range_of: dict[relax.Var, str] = {}

        def need(var: relax.Var, consumer: Site) -> None:
            source = self._source(var)
            if source not in range_of:
                producer = self.sites.get(source)
                name = f"{(producer or consumer).layer.name}_{'output' if producer else 'input'}"
                observed[name] = Observed(
                    name, source, self._op_name(source), self._nonnegative(source)
                )
                range_of[source] = name
            range_of[var] = range_of[source]

        for var, site in self.sites.items():
            if site.layer.quantized:
                need(site.data, site)
                if var in int8:
                    need(var, site)
        return observed, range_of

    def _op_name(self, var: relax.Var) -> str:
        site = self.sites.get(var)
        if site is not None:
            return site.layer.chain or site.layer.kind
        binding = self.producers.get(var)
        if binding is None:
            return "input"
        op = getattr(binding.value, "op", None)
        return getattr(op, "name", None) or type(binding.value).__name__

    def _nonnegative(self, var: relax.Var) -> bool:
        """Provably >= 0: a chain ending in ReLU / sigmoid / clip(lo >= 0), or a pool of one."""
        site = self.sites.get(var)
        if site is None or site.func is None:
            return False
        if site.layer.kind not in CHAIN_KINDS:
            return isinstance(site.data, relax.Var) and self._nonnegative(site.data)
        activation = _CHAIN_SPECS[site.layer.chain].activation
        if activation in _NONNEGATIVE_ACTIVATIONS:
            return True
        if activation == "clip":
            low = ru.prim_value(site.annotated["activation"].args[1])
            return low is not None and low >= 0
        return False


def plan_quantization(
    prepared: tvm.IRModule,
    exclude_layers: Iterable[str] | None = None,
    exclude_layers_match: Iterable[str] | None = None,
    exclude_operators: Iterable[str] | None = None,
) -> QuantPlan:
    """Group ``prepared`` (output of ``prepare_for_onednn``) and decide what to quantize.

    Raises:
        ValueError: unknown ``exclude_operators`` or ``exclude_layers`` names.
        re.error: an invalid ``exclude_layers_match`` regular expression.
    """
    exclusions = _Exclusions(exclude_layers, exclude_layers_match, exclude_operators)
    return _Planner(group_chains(prepared), exclusions).plan()


#: The reason of a layer :func:`float_stem` keeps float32 (``quantize(float_stem=True)``).
STEM_REASON = "the first conv and the depthwise conv it feeds (float_stem=False quantizes them)"


def float_stem(plan: QuantPlan) -> list[str]:
    """The stem layers ``quantize(float_stem=True)`` keeps float32: a conv reading a model
    input whose output feeds a depthwise conv (``groups`` = its channels > 1), and that
    depthwise conv (MobileNet's first two layers); ``[]`` when the network starts otherwise
    (ResNet's first conv feeds a max pool: it stays int8).

    Both layers read the tensors int8 represents worst: the normalized image (s8 steps
    coarser than the photo's own 8-bit ones) and 32 channels of very different ranges
    sharing one u8 scale, and a depthwise conv sums over 9 taps only, so nothing averages
    their rounding out.
    """
    params = plan.module["main"].params
    for site in plan.sites.values():
        if site.layer.kind != "conv2d" or not site.layer.quantized:
            continue
        if site.data is None or not any(site.data.same_as(p) for p in params):
            continue
        for user in plan.sites.values():
            if user.data is None or not user.data.same_as(site.var) or user.layer.kind != "conv2d":
                continue
            groups = int(user.annotated["root"].attrs.groups)
            channels = ru.static_shape(user.annotated["rhs"])[0]
            if groups > 1 and groups == channels and user.layer.quantized:
                return [site.layer.name, user.layer.name]
    return []


def replan(plan: QuantPlan, keep_float: Mapping[str, str]) -> QuantPlan:
    """``plan`` decided again on the same grouped module, with the layers of ``keep_float``
    (name -> reason) kept in float32 too. Vars (and so ``observed[...].var``) are shared."""
    exclusions = plan.exclusions or _Exclusions(None, None, None)
    return _Planner(plan.module, exclusions.with_keep_float(keep_float)).plan()


def without_ranges(plan: QuantPlan, unusable: Mapping[str, str]) -> QuantPlan:
    """``plan`` with every layer that needs one of the ``unusable`` ranges kept float32.

    ``unusable`` maps range names of ``plan`` to why calibration gives none (non-finite
    values, the collector returned none...). A layer reading such a tensor as its input or
    residual stays float32 (its reason says which range and why); a producer whose int8
    output would need one then writes float32 because of its float32 users. The returned
    plan needs none of the unusable tensors.
    """
    bad = {plan.observed[n].var: (n, why) for n, why in unusable.items() if n in plan.observed}
    keep: dict[str, str] = {}
    while True:
        new = {}
        for site in plan.sites.values():
            if not site.layer.quantized:
                continue
            for role, operand in (("input", site.data), ("residual", site.residual)):
                name = plan.range_of.get(operand) if operand is not None else None
                if name is not None and plan.observed[name].var in bad:
                    source, why = bad[plan.observed[name].var]
                    new[site.layer.name] = f"no calibration range for its {role} ({source}: {why})"
                    break
        if not new:  # a producer that would still write int8 into an unusable range
            for name, observed in plan.observed.items():
                producer = plan.sites.get(observed.var)
                if observed.var in bad and producer is not None and producer.layer.quantized:
                    source, why = bad[observed.var]
                    new[producer.layer.name] = f"no calibration range for its output ({why})"
        if not new:
            return plan
        keep.update(new)
        plan = replan(plan, keep)


def quantizable_layers(
    mod: tvm.IRModule,
    exclude_layers: Iterable[str] | None = None,
    exclude_layers_match: Iterable[str] | None = None,
    exclude_operators: Iterable[str] | None = None,
) -> LayerTable:
    """List the conv2d / matmul / pool layers of ``mod`` and whether each would be quantized.

    ``print(quantizable_layers(mod))`` gives a table; entries are :class:`Layer`. Names are
    the ones ``exclude_layers`` takes. ``mod`` is not modified.
    """
    plan = plan_quantization(
        prepare_for_onednn(mod), exclude_layers, exclude_layers_match, exclude_operators
    )
    return LayerTable(plan.layers)
