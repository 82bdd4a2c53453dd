"""What ``tvm_onednn.quantize`` did: :class:`QuantizeReport`.

``qmod, report = tvm_onednn.quantize(mod, calib_data, return_report=True)``; then
``print(report)`` gives a table (one row per conv2d / matmul / pool layer), ``report.summary()``
the short form (counts, calibration, the layers kept float32 and why) and ``report.as_dict()``
the same as plain data (JSON-serializable).

For every layer: whether it is int8, the u8/s8 type of its input and output (``float32`` for
an output read by float32 ops), the weight encoding, the int8 oneDNN composite it becomes,
or why it stays float32, grouped by kind (:data:`~tvm_onednn.quantize.annotate.REASON_KINDS`):

* ``excluded``: ``exclude_layers``, ``exclude_layers_match`` or ``exclude_operators``;
* ``unsupported``: no int8 oneDNN chain runs it (non-constant or batched weights, an NHWC
  conv, a layer oneDNN does not fuse, ...);
* ``input``: a pool whose input is not int8;
* ``calibration``: no usable calibration range for a tensor it needs (inf / NaN observed,
  the collector returned none, calibration could not run).
* ``accuracy``: kept float32 by the accuracy control (``quantize(..., validation=...)``;
  :attr:`QuantizeReport.accuracy_control` has the metrics).

Calibration: the mode and collector, the batches run, and the pipeline the calibration module
ran on: ``"onednn"`` (float32 oneDNN), or TVM's ``"default"`` when the oneDNN build (or its
first run) failed, with the first line of that error.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from .. import relax_utils as ru
from ..calib.collector import Range
from .accuracy_control import AccuracyControlReport
from .annotate import ACTIVATION_MATMUL_REASON, CHAIN_KINDS, REASON_KINDS, QuantPlan
from .calibrate import CalibrationRun
from .realize import tensor_quant_params
from . import weights as _weights  # looked up at call time (tests pin the ISA)
from .weights import WeightEncoding

__all__ = ["LayerReport", "QuantizeReport", "build_report"]

_SHORT = {"uint8": "u8", "int8": "s8", "float32": "f32", None: "-"}
_KIND_TITLES = {
    "excluded": "excluded by the user",
    "stem": "float32 stem (quantize's float_stem)",
    "unsupported": "not supported by the int8 table",
    "input": "input not int8",
    "calibration": "no calibration range",
    "accuracy": "kept float32 by accuracy control",
}
_BACKEND_NAMES = {"onednn": "float32 oneDNN", "default": "TVM's default pipeline"}


@dataclass(frozen=True)
class LayerReport:
    """One layer in a :class:`QuantizeReport`.

    Attributes:
        name: the layer's name (``conv2d_3``; what ``exclude_layers`` takes).
        kind: ``conv2d``, ``matmul``, ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d``.
        quantized: whether it runs in int8.
        chain: the float32 chain it was found in (``onednn.conv2d_bias_relu``), or None.
        int8_chain: the int8 composite it becomes (``onednn.qconv2d_bias_relu``), or None.
        input_dtype: ``uint8`` / ``int8`` for an int8 layer, None otherwise.
        output_dtype: ``uint8`` / ``int8`` (read only by int8 layers) or ``float32``.
        weights: the s8 weight encoding (``s8 per-channel, 8-bit``...), None for pools and
            float32 layers.
        reason: why it stays float32 (None when int8).
        reason_kind: ``excluded``, ``unsupported``, ``input``, ``calibration``, ``stem``
            (``float_stem``) or ``accuracy``.
    """

    name: str
    kind: str
    quantized: bool
    chain: str | None = None
    int8_chain: str | None = None
    input_dtype: str | None = None
    output_dtype: str = "float32"
    weights: str | None = None
    reason: str | None = None
    reason_kind: str | None = None


@dataclass
class QuantizeReport:
    """What :func:`tvm_onednn.quantize` quantized, what it kept float32 and why, and how it
    calibrated. ``print(report)``: the full table; :meth:`summary`: the short form;
    :meth:`as_dict`: plain data."""

    layers: list[LayerReport]
    calib_mode: str
    collector: str | None = None  # the collector's class name (None for calib_mode="none")
    batches: int = 0
    backend: str | None = None  # pipeline the calibration module ran on
    fallbacks: list[tuple[str, str]] = field(default_factory=list)  # (backend, error line)
    unusable_ranges: dict[str, str] = field(default_factory=dict)  # range name -> why none
    quantized_dtype: str = "auto"
    quantize_granularity: str = "channel-wise"
    int8_dot_product: bool | None = None  # VNNI/AMX: full 8-bit weights everywhere
    #: What ``quantize(..., validation=...)`` did (None without validation).
    accuracy_control: AccuracyControlReport | None = None
    #: ``quantize(float_matmul_math=...)``: the math of float32 matmuls of two activations.
    float_matmul_math: str = "f32"

    # --- counts ----------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_quantized(self) -> int:
        return sum(layer.quantized for layer in self.layers)

    def quantized(self) -> list[str]:
        """Names of the int8 layers."""
        return [layer.name for layer in self.layers if layer.quantized]

    def kept_float32(self) -> dict[str, str]:
        """``{layer: reason}`` of the layers that stay float32, in graph order."""
        return {layer.name: layer.reason for layer in self.layers if not layer.quantized}

    def layer(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers: {[l.name for l in self.layers]}")

    @property
    def calibration_fell_back(self) -> bool:
        """The calibration module did not run on float32 oneDNN (see :attr:`fallbacks`)."""
        return bool(self.fallbacks)

    def set_accuracy_control(self, control: AccuracyControlReport, reason: str) -> None:
        """Attach ``control``; its reverted layers get ``reason_kind="accuracy"``."""
        self.accuracy_control = control
        reverted = set(control.reverted)
        self.layers = [
            dataclasses.replace(layer, reason=reason, reason_kind="accuracy")
            if layer.name in reverted and not layer.quantized
            else layer
            for layer in self.layers
        ]

    # --- text ------------------------------------------------------------------------------

    def _calibration_line(self) -> str:
        if self.calib_mode == "none":
            return (
                "calibration: none (dynamic: matmul input ranges computed per call inside "
                "oneDNN int8; conv chains stay fake-quantized with TVM's kernels)"
            )
        mode = f"{self.calib_mode} ({self.collector})" if self.collector else self.calib_mode
        if self.batches == 0 and self.backend is None and not self.fallbacks:
            return f"calibration: {mode}, not run (no layer needs a range)"
        where = _BACKEND_NAMES.get(self.backend, self.backend) if self.backend else "no backend"
        line = f"calibration: {mode}, {self.batches} batch(es), ran on {where}"
        for backend, error in self.fallbacks:
            line += f"\n  the {backend} calibration {error}"
        return line

    def _settings_line(self) -> str:
        dtype = {
            "auto": "u8 after non-negative ranges, else s8",
            "int8": "s8 (forced)",
            "uint8": "u8 (forced)",
        }.get(self.quantized_dtype, self.quantized_dtype)
        isa = {
            True: "int8 dot products (VNNI/AMX): full 8-bit weights",
            False: "no int8 dot products (AVX2): weights encoded per layer to stay exact",
            None: "",
        }[self.int8_dot_product]
        line = f"activations: {dtype}; weights: s8 {self.quantize_granularity}"
        line = f"{line}; {isa}" if isa else line
        activation_matmuls = sum(
            1 for layer in self.layers
            if layer.kind == "matmul" and not layer.quantized and layer.reason == ACTIVATION_MATMUL_REASON
        )  # fmt: skip
        if activation_matmuls and self.float_matmul_math == "bf16":
            line += (f"; {activation_matmuls} float32 matmul(s) of two activations: bf16 "
                     "operands on AMX (float_matmul_math='bf16') unless fused into attention "
                     "(float32)")  # fmt: skip
        return line

    def _kept_lines(self) -> list[str]:
        kept = [layer for layer in self.layers if not layer.quantized]
        if not kept:
            return []
        by_kind: dict[str, list[LayerReport]] = {}
        for layer in kept:
            by_kind.setdefault(layer.reason_kind or "unsupported", []).append(layer)
        lines = [f"kept float32 ({len(kept)}):"]
        for kind in (*REASON_KINDS, *sorted(set(by_kind) - set(REASON_KINDS))):
            layers = by_kind.get(kind)
            if not layers:
                continue
            lines.append(f"  {_KIND_TITLES.get(kind, kind)} ({len(layers)}):")
            reasons = Counter(layer.reason for layer in layers)
            for reason in reasons:  # first-seen order
                names = [layer.name for layer in layers if layer.reason == reason]
                more = f" (+{len(names) - 8} more)" if len(names) > 8 else ""
                shown = ", ".join(names[:8]) + more
                lines.append(f"    {shown}: {reason}")
        return lines

    def _header(self) -> list[str]:
        if not self.layers:
            return ["int8 quantization: no conv2d / matmul / pooling layers; model stays float32"]
        kinds = Counter(layer.kind for layer in self.layers)
        int8 = Counter(layer.kind for layer in self.layers if layer.quantized)
        per_kind = ", ".join(f"{k} {int8[k]}/{n}" for k, n in kinds.items())
        return [
            f"int8 quantization: {self.num_quantized} of {self.num_layers} layers int8 "
            f"({per_kind})",
            self._calibration_line(),
            self._settings_line(),
        ]

    def _control_lines(self) -> list[str]:
        return [self.accuracy_control.summary()] if self.accuracy_control else []

    def summary(self) -> str:
        """Counts, calibration, and the layers kept float32 with their reasons."""
        return "\n".join(self._header() + self._control_lines() + self._kept_lines())

    def table(self) -> str:
        """One row per layer."""
        rows = [("layer", "int8", "in", "out", "weights", "composite / why float32")]
        for layer in self.layers:
            rows.append(
                (
                    layer.name,
                    "yes" if layer.quantized else "no",
                    _SHORT.get(layer.input_dtype, layer.input_dtype),
                    _SHORT.get(layer.output_dtype, layer.output_dtype),
                    layer.weights or "-",
                    layer.int8_chain if layer.quantized else f"[{layer.reason}]",
                )
            )
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
        return "\n".join(
            "  " + "  ".join(f"{c:<{w}}" for c, w in zip(row[:-1], widths)) + "  " + row[-1]
            for row in rows
        )

    def __str__(self) -> str:
        lines = self._header()
        if self.layers:
            lines.append(self.table())
        return "\n".join(lines + self._control_lines() + self._kept_lines())

    def as_dict(self) -> dict:
        return {
            "num_layers": self.num_layers,
            "num_quantized": self.num_quantized,
            "layers": [asdict(layer) for layer in self.layers],
            "calibration": {
                "mode": self.calib_mode,
                "collector": self.collector,
                "batches": self.batches,
                "backend": self.backend,
                "fallbacks": [{"backend": b, "error": e} for b, e in self.fallbacks],
                "unusable_ranges": dict(self.unusable_ranges),
            },
            "quantized_dtype": self.quantized_dtype,
            "quantize_granularity": self.quantize_granularity,
            "int8_dot_product": self.int8_dot_product,
            "float_matmul_math": self.float_matmul_math,
            "accuracy_control": (
                self.accuracy_control.as_dict() if self.accuracy_control else None
            ),
        }


def describe_encoding(encoding: WeightEncoding, granularity: str) -> str:
    """``s8 per-channel, 8-bit`` / ``..., 8-bit, pair sums <= 128`` / ``..., 7-bit even``."""
    per = "per-channel" if granularity == "channel-wise" else "per-tensor"
    levels = encoding.levels * encoding.step
    bits = "8-bit" if levels >= 127 else f"{levels.bit_length() if encoding.step == 1 else 7}-bit"
    text = f"s8 {per}, {bits}"
    if encoding.step > 1:
        text += f" multiples of {encoding.step}"
    if encoding.pair_limit is not None:
        text += f", pair sums <= {encoding.pair_limit}"
    return text


def _one_input_channel(weight, kind: str) -> bool:
    """A conv summing over one input channel per group (depthwise): no weight pairs."""
    shape = ru.static_shape(weight) if weight is not None else None
    return kind == "conv2d" and shape is not None and len(shape) == 4 and shape[1] == 1


def _int8_chain(chain: str | None) -> str | None:
    if chain is None or "." not in chain:
        return None
    backend, name = chain.split(".", 1)
    return f"{backend}.q{name}"


def build_report(
    plan: QuantPlan,
    ranges: Mapping[str, Range] | None,
    calibration: CalibrationRun | None,
    *,
    calib_mode: str,
    quantized_dtype: str = "auto",
    quantize_granularity: str = "channel-wise",
) -> QuantizeReport:
    """The report of ``plan`` realized with ``ranges`` (None: run-time scales)."""
    tensors = tensor_quant_params(plan, ranges, quantized_dtype)
    try:
        dot_product: bool | None = bool(_weights.has_int8_dot_product())
    except Exception:  # noqa: BLE001 (a report must not fail on the ISA query)
        dot_product = None
    layers = []
    for var, site in plan.sites.items():
        layer = site.layer
        if not layer.quantized:
            layers.append(
                LayerReport(
                    layer.name,
                    layer.kind,
                    False,
                    layer.chain,
                    reason=layer.reason,
                    reason_kind=layer.reason_kind or "unsupported",
                )
            )
            continue
        src = tensors[plan.range_of[site.data]].dtype
        out = tensors[plan.range_of[var]].dtype if var in plan.int8_outputs else "float32"
        weights = None
        if layer.kind in CHAIN_KINDS:
            encoding = _weights.weight_encoding(src, layer.kind)
            if _one_input_channel(site.annotated.get("rhs"), layer.kind):
                encoding = dataclasses.replace(encoding, pair_limit=None)  # no pairs to bound
            weights = describe_encoding(encoding, quantize_granularity)
        layers.append(
            LayerReport(
                layer.name,
                layer.kind,
                True,
                layer.chain,
                _int8_chain(layer.chain),
                src,
                out,
                weights,
            )
        )
    report = QuantizeReport(
        layers,
        calib_mode,
        quantized_dtype=quantized_dtype,
        quantize_granularity=quantize_granularity,
        int8_dot_product=dot_product,
    )
    if calibration is not None:
        report.collector = calibration.collector
        report.batches = calibration.batches
        report.backend = calibration.backend
        report.fallbacks = list(calibration.fallbacks)
        report.unusable_ranges = dict(calibration.unusable)
    return report
