"""Build the integer program of a QuantizedModule, with certified bounds, step by step.

The ONNX importer (onnx/importer.py) walks the graph in order. Each node's op class (from
ONNX_OPS_TO_QUANTIZED_IMPL) translates it, calling back here to emit program steps: a linear
layer becomes a LinearStep whose accumulator range is certified by interval arithmetic over
every integer its input can hold; a quantizer after it becomes one LookupStep that fuses
rescale, bias, activation and re-quantization.
"""

from __future__ import annotations

import numpy as np

from .bounds import accumulator_range, signed_bits
from .program import (
    GatherStep,
    LinearStep,
    LookupStep,
    ReshapeStep,
    SumStep,
    bits_for,
)
from .quantizers import QuantizationOptions, UniformQuantizer
from .reports import LayerReport, PostTrainingOptions
from .rounding import (
    AUTO_ROUNDING,
    RoundingPlan,
    aligned_base,
    auto_lsbs,
    cheapest_lsbs,
    check_rounding_threshold_bits,
    lsbs_for_threshold,
    round_accumulator,
)
from .stages import Affine, apply_stages
from .values import ClearInput, Encrypted

MAX_LOOKUP_BITS = 16
"""Widest table lookup concrete-python compiles."""


def _activation_tables(x: Encrypted, quantizer: UniformQuantizer, n_values: int) -> np.ndarray:
    """``tables[j, v]``: flattened feature j's quantized activation for stored value v."""
    values = np.arange(n_values).reshape((-1,) + (1,) * len(x.feature_shape))
    view = np.broadcast_to(apply_stages(x.stages, values), (n_values, *x.feature_shape))
    if np.isnan(view).any():  # e.g. a division by zero: it has no integer to round to
        raise ValueError("An activation is not a number (NaN) for some accumulator value.")
    return quantizer.quant(view.reshape(n_values, -1)).T


class ModuleBuilder:
    """Collects the program steps, the input quantizer and the layer reports of one graph.

    Steps may read any earlier value (program.py), so the graph's forks and joins (residual
    blocks) map onto the program as they are. Each accumulator is rounded before its lookup as
    ``rounding_plan`` says, when the network trained with that rounding and made the plan, or
    by the bits ``rounding_threshold_bits`` chooses from the certified ranges (post-training);
    not both.
    """

    def __init__(
        self,
        post_training: PostTrainingOptions | None = None,
        rounding_threshold_bits: int | str | None = None,
        rounding_plan: RoundingPlan | None = None,
    ):
        self.post_training = post_training
        self.rounding_threshold_bits = check_rounding_threshold_bits(rounding_threshold_bits)
        if rounding_plan is not None and rounding_threshold_bits is not None:
            raise ValueError("Pass rounding_plan or rounding_threshold_bits, not both.")
        self.rounding_plan = rounding_plan
        self.steps: list = []
        self.layers: list[LayerReport] = []
        self.input_quantizer: UniformQuantizer | None = None
        self.input_value: ClearInput | None = None
        self._rounded_lookups = 0
        self._position: dict[int, int] = {}  # id(step) -> its index in steps
        self._reports: dict[int, LayerReport] = {}  # id(step) -> the report of its integers

    # -- the program's values ------------------------------------------------------------------

    def source(self, x: Encrypted) -> int:
        """The index of ``x``'s stored integers among the program's values (0: the input)."""
        return 0 if x.producer is None else self._position[id(x.producer)] + 1

    def _emit(self, step, *inputs: Encrypted):
        """Append ``step``, reading ``inputs`` (steps with several sources name them)."""
        if inputs:
            step.sources = tuple(self.source(x) for x in inputs)
        self._position[id(step)] = len(self.steps)
        self.steps.append(step)
        return step

    def _report(self, step, report: LayerReport) -> LayerReport:
        """Record ``report`` as the layer of ``step``'s output (emitted already)."""
        report.value_index = self._position[id(step)] + 1
        self.layers.append(report)
        self._reports[id(step)] = report
        return report

    # -- steps emitted by the op classes -------------------------------------------------------

    def quantize_input(self, value: ClearInput, quantizer: UniformQuantizer) -> Encrypted:
        """The client quantizes; the circuit receives ``q − qmin`` (never negative)."""
        if self.input_quantizer is not None:
            raise ValueError("The graph quantizes its input twice; only one input quantizer.")
        if np.ndim(quantizer.scale) != 0:
            raise ValueError("The input quantizer must have one scale for the whole tensor.")
        self.input_quantizer = quantizer
        self.input_value = value
        grid = quantizer.options.grid
        base = np.full(value.feature_shape, grid.qmin, dtype=np.int64)
        return Encrypted.on_grid(quantizer, base, base * 0 + grid.span, producer=None)

    def add_linear(
        self,
        x: Encrypted,
        weight: np.ndarray,
        name: str,
        *,
        output_shape: tuple[int, ...] | None = None,
        scale=1.0,
        bias=None,
        constant=0,
    ) -> Encrypted:
        """Emit ``weight @ x`` on each row's flattened features (a LinearStep).

        ``weight`` is the integer matrix (n_out, n_in); ``constant`` an integer per output. The
        output's float view is ``x.grid.scale · scale · (weight @ (x + offset) + constant) +
        bias``, shaped ``output_shape``. Its accumulator bounds are exact
        (:func:`accumulator_range` over the input's grid). Without a bias and with one
        ``scale`` for all outputs the result is integers on a grid again (a pooling sum, a
        padding, a bias-free per-tensor layer), which the next linear map reads directly.
        """
        if x.grid is None:
            raise ValueError(f"{name}: a linear layer needs a quantized input.")
        weight = np.asarray(weight, dtype=np.int64)
        n_out, n_in = weight.shape
        if n_in != x.span.size:
            raise ValueError(f"{name}: weight has {n_in} inputs, the tensor has {x.span.size}.")
        output_shape = (n_out,) if output_shape is None else tuple(output_shape)
        offset = x.grid.offset.reshape(-1)
        constant = np.broadcast_to(np.asarray(constant, dtype=np.int64), (n_out,))
        acc_min, acc_max = accumulator_range(weight, offset, offset + x.span.reshape(-1))
        acc_min, acc_max = acc_min + constant, acc_max + constant
        span = acc_max - acc_min
        step = LinearStep(
            weight, weight @ offset + constant - acc_min, bits_for(span.max()), output_shape
        )
        self._emit(step, x)
        self._report(step, LayerReport(name, n_out, acc_min, acc_max, step.bit_width))
        scale = x.grid.scale * np.asarray(scale, dtype=np.float64)
        acc_min, span = acc_min.reshape(output_shape), span.reshape(output_shape)
        if bias is None and np.all(scale == scale.flat[0]):
            return Encrypted.integers(scale.flat[0], acc_min, span, producer=step)
        offset = scale * acc_min + (0.0 if bias is None else np.asarray(bias))
        return Encrypted(span, (Affine(scale, offset),), None, producer=step)

    def add_sum(
        self,
        terms: list[Encrypted],
        signs: list[int],
        name: str,
        scale: float,
        layer: LayerReport | bool | None = None,
        span=None,
    ):
        """Emit ``Σ signs[i] · terms[i]`` of integer tensors of one shape (a SumStep).

        The caller says what one unit of the sum stands for (``scale``): the terms' common
        grid step for a residual Add. The bounds add up term by term, as interval arithmetic
        does: exact for independent terms, sound for every input. Lookups of the sum count in
        ``layer`` if given (MaxPool's one report for all its steps), in a new report if None,
        in their own if False (they are a quantizer's, not this sum's). ``span``, if given,
        is a tighter bound the caller proves for correlated terms (MaxPool's
        ``b + relu(a − b)`` never exceeds the larger of its terms).
        """
        shape = terms[0].feature_shape
        for term in terms:
            if term.grid is None or term.feature_shape != shape:
                raise ValueError(
                    f"{name}: the terms must be quantized tensors of one shape; got "
                    f"{[t.feature_shape for t in terms]}."
                )
        constant = sum(t.span for t, sign in zip(terms, signs) if sign < 0) + np.zeros(shape, int)
        span = sum(t.span for t in terms) if span is None else np.asarray(span, np.int64)
        offset = sum(sign * t.grid.offset for t, sign in zip(terms, signs)) - constant
        bit_width = bits_for(span.max())
        step = self._emit(SumStep([self.source(t) for t in terms], signs, constant, bit_width))
        if layer is None:
            low = offset.reshape(-1)
            layer = LayerReport(name, low.size, low, low + span.reshape(-1), bit_width)
            self._report(step, layer)
        if layer:
            self._reports[id(step)] = layer
        return Encrypted.integers(scale, offset, span, producer=step)

    def report_of(self, x: Encrypted) -> LayerReport | None:
        """The report in which lookups of ``x`` count (None for lookups' outputs)."""
        return self._reports.get(id(x.producer))

    def add_gather(self, terms: list[Encrypted], index, output_shape, name: str) -> Encrypted:
        """Pick each output feature from the terms' flattened, concatenated features (a
        GatherStep: no arithmetic). The terms must share one grid scale."""
        if any(t.grid is None or t.grid.scale != terms[0].grid.scale for t in terms):
            raise ValueError(f"{name}: needs quantized inputs on one grid.")
        offset = np.concatenate([t.grid.offset.reshape(-1) for t in terms])
        span = np.concatenate([t.span.reshape(-1) for t in terms])
        index = np.asarray(index, dtype=np.int64).reshape(output_shape)
        bit_width = bits_for(span[index].max())
        sources = [self.source(t) for t in terms]
        step = self._emit(GatherStep(sources, index, output_shape, bit_width))
        return Encrypted.integers(terms[0].grid.scale, offset[index], span[index], producer=step)

    def add_view_gather(self, terms: list[Encrypted], index, name: str) -> Encrypted:
        """:meth:`add_gather` of integers that are no grid's (layers' outputs, each with its own
        affine view): the integers are picked the same way, and so are the per-feature scales
        and offsets of their views. Nothing linear can read the result; the client dequantizes
        it (what networks averaged in one circuit output, torch/averaged.py)."""
        if not all(len(t.stages) == 1 and isinstance(t.stages[0], Affine) for t in terms):
            raise ValueError(f"{name}: concatenates only layers' outputs or quantized tensors.")

        def flat(values) -> np.ndarray:
            return np.concatenate(
                [np.broadcast_to(v, t.feature_shape).reshape(-1) for v, t in zip(values, terms)]
            )

        span = flat([t.span for t in terms])
        scale = flat([t.stages[0].scale for t in terms])
        offset = flat([t.stages[0].offset for t in terms])
        index = np.asarray(index, dtype=np.int64)
        sources = [self.source(t) for t in terms]
        step = self._emit(GatherStep(sources, index, index.shape, bits_for(span[index].max())))
        view = Affine(scale[index], offset[index])
        return Encrypted(span[index], (view,), None, producer=step)

    def add_lookup(self, x: Encrypted, quantizer: UniformQuantizer, name: str = "") -> Encrypted:
        """Emit one table lookup per feature: ``quantizer(stages(stored))``.

        Its bootstraps are counted in the report of the step that made ``x`` (a linear map, a
        sum), or in a report of its own.
        """
        if np.ndim(quantizer.scale) != 0:
            raise ValueError("Activation quantizers must have one scale for the whole tensor.")
        producer = x.producer
        lsbs, shift = 0, 0
        if isinstance(producer, LinearStep) and self._rounds:
            lsbs = self._choose_lsbs(x, quantizer)
            x, shift = self._align_for_rounding(x, lsbs)
        unit = 1 << lsbs
        reachable_max = round_accumulator(x.span, lsbs).reshape(-1)
        input_bits = max(bits_for(reachable_max.max()), lsbs + 1)
        if input_bits - lsbs > MAX_LOOKUP_BITS:
            raise ValueError(
                f"A table lookup would read a {input_bits - lsbs}-bit accumulator; FHE supports "
                f"at most {MAX_LOOKUP_BITS} bits. Lower the weight or activation bits, prune "
                "(n_accum_bits), or set rounding_threshold_bits."
            )
        if isinstance(producer, (LinearStep, SumStep)):
            producer.bit_width = max(producer.bit_width, input_bits)

        grid_values = np.arange(2**input_bits)
        q = _activation_tables(x, quantizer, len(grid_values))
        reachable = (grid_values[None, :] <= reachable_max[:, None]) & (grid_values % unit == 0)
        q_min = np.where(reachable, q, np.iinfo(np.int64).max).min(axis=1)
        q_max = np.where(reachable, q, np.iinfo(np.int64).min).max(axis=1)
        tables = np.clip(q, q_min[:, None], q_max[:, None]) - q_min[:, None]
        span = q_max - q_min
        step = LookupStep(tables, input_bits, lsbs, bits_for(span.max()), x.feature_shape, shift)
        self._emit(step, x)
        report = self._reports.get(id(producer))
        if report is None:  # a lookup of a lookup's (or the input's) integers
            stored = reachable_max * 0
            report = LayerReport(name, len(span), stored, reachable_max, input_bits)
            report.value_index = self.source(x)
            self.layers.append(report)
        report.pbs_count += len(span)
        report.pbs_precision = max(report.pbs_precision or 0, step.precision)
        report.lsbs_to_remove = max(report.lsbs_to_remove, lsbs)
        shape = x.feature_shape
        return Encrypted.on_grid(quantizer, q_min.reshape(shape), span.reshape(shape), step)

    @property
    def _rounds(self) -> bool:
        return self.rounding_threshold_bits is not None or self.rounding_plan is not None

    def _choose_lsbs(self, x: Encrypted, quantizer: UniformQuantizer) -> int:
        """Low bits to round away before the lookup on a linear layer's accumulator."""
        report = self._reports[id(x.producer)]
        lo, hi = report.accumulator_min, report.accumulator_max
        if self.rounding_plan is not None:
            self._rounded_lookups += 1
            return self.rounding_plan.for_layer(self._rounded_lookups - 1)
        if self.rounding_threshold_bits == AUTO_ROUNDING:
            span_max = int(x.span.max())
            tables = _activation_tables(x, quantizer, span_max + 1)
            # at most what the margin allows; within that, the cheapest. Rounding up may carry
            # into a new top bit: the cost accounts for it, the margin still holds.
            allowed = min(auto_lsbs(tables, x.span.reshape(-1)), bits_for(span_max) - 1)
            return cheapest_lsbs(lo, hi, allowed)
        return lsbs_for_threshold(lo, hi, self.rounding_threshold_bits)

    def _align_for_rounding(self, x: Encrypted, lsbs: int):
        """``(x + shift, shift)``: the accumulator minus a multiple of ``2**lsbs`` instead of
        minus its minimum, so that rounding the stored value rounds the accumulator itself (see
        rounding.py). The lookup adds the shift (a leveled addition), so the linear step's
        output, which other steps may read too, stays as it is."""
        if not lsbs:
            return x, 0
        lo = self._reports[id(x.producer)].accumulator_min.reshape(x.feature_shape)
        shift = lo - aligned_base(lo, lsbs)
        stages = (Affine(1.0, -shift), *x.stages)
        return Encrypted(x.span + shift, stages, None, producer=x.producer), shift

    def add_reshape(self, x: Encrypted, feature_shape: tuple[int, ...]) -> Encrypted:
        if x.grid is None:
            raise ValueError("Reshaping an accumulator before its quantizer is not supported.")
        step = self._emit(ReshapeStep(feature_shape, bits_for(x.span.max())), x)
        return Encrypted.integers(
            x.grid.scale,
            x.grid.offset.reshape(feature_shape),
            x.span.reshape(feature_shape),
            producer=step,
        )

    def ensure_quantized(self, value, tensor_name: str, consumer: str) -> Encrypted:
        """Return ``value`` as quantized integers, inserting a calibrated quantizer (PTQ)."""
        if isinstance(value, Encrypted) and value.grid is not None:
            return value
        if self.post_training is None:
            raise ValueError(
                f"{consumer} reads tensor {tensor_name!r}, which no quantizer precedes. A QAT "
                "graph needs a Quant node there; a float graph needs compile_torch_model."
            )
        options = self.post_training
        if isinstance(value, ClearInput):
            grid = QuantizationOptions(options.input_bits, is_signed=False)
            return self.quantize_input(value, options.calibrated_quantizer(tensor_name, grid))
        if isinstance(value, Encrypted):
            grid = QuantizationOptions(options.activation_bits, is_signed=False)
            quantizer = options.calibrated_quantizer(tensor_name, grid)
            return self.add_lookup(value, quantizer, f"{consumer} (quantize {tensor_name})")
        raise ValueError(f"{consumer}: tensor {tensor_name!r} is a constant, not an activation.")

    def common_grid(self, values: list, names: list[str], consumer: str) -> list[Encrypted]:
        """The inputs of an Add, Sub or Concat as integers on one grid step, so that their sum
        (or concatenation) is exact.

        With quantization-aware training, the inputs must already share a scale (one
        QuantIdentity applied to every branch). After training (post-training quantization),
        every input on a finer grid is re-quantized by a lookup to the coarsest one.
        """
        values = [self.ensure_quantized(v, n, consumer) for v, n in zip(values, names)]
        scales = [v.grid.scale for v in values]
        scale = max(scales)
        if all(s == scale for s in scales):
            return values
        if self.post_training is None:
            raise ValueError(
                f"{consumer}: its inputs are quantized with different scales {scales}, so "
                "their integers do not add up exactly. Quantize every branch with one shared "
                "quantizer before it (the same Brevitas QuantIdentity module on each input)."
            )
        return [
            v if v.grid.scale == scale else self.add_lookup(v, _requantizer(v, scale), consumer)
            for v in values
        ]

    def finish(self, output) -> Encrypted:
        """The graph's output value, once every node is translated; ValueError if the rounding
        plan does not match the graph's layers or the output is not the program's last value."""
        plan = self.rounding_plan
        if plan is not None and self._rounded_lookups != len(plan.lsbs):
            raise ValueError(
                f"The rounding plan has {len(plan.lsbs)} layers for "
                f"{self._rounded_lookups} linear layers followed by a lookup."
            )
        if not isinstance(output, Encrypted):
            raise ValueError("The graph output does not depend on its input through any layer.")
        if self.source(output) != len(self.steps):
            raise ValueError("The graph output is not the last tensor its program computes.")
        return output


def _requantizer(x: Encrypted, scale: float) -> UniformQuantizer:
    """A quantizer of step ``scale`` wide enough for every value of ``x``: re-quantizing
    ``x`` with it never clips."""
    ends = x.grid.scale * (x.grid.offset + np.stack([0 * x.span, x.span])) / scale
    lo, hi = int(np.floor(ends.min())), int(np.ceil(ends.max()))
    options = QuantizationOptions(max(signed_bits(lo, hi), 2), is_signed=True)
    return UniformQuantizer(options, scale, 0)
