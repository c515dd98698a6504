"""Build the integer program of a QuantizedModule, with certified bounds, step by step.

The ONNX importer (onnx/importer.py) walks the graph in order. Each node's op class (from
ONNX_OPS_TO_QUANTIZED_IMPL) translates it, calling back here to emit program steps: a linear
layer becomes a LinearStep whose accumulator range is certified by interval arithmetic over
every integer its input can hold; a quantizer after it becomes one LookupStep that fuses
rescale, bias, activation and re-quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import accumulator_range
from .program import LinearStep, LookupStep, ReshapeStep, bits_for
from .quantizers import QuantizationOptions, UniformQuantizer
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


@dataclass
class LayerReport:
    """What one linear layer costs and why it cannot overflow."""

    name: str
    n_neurons: int
    accumulator_min: np.ndarray  # certified, per neuron
    accumulator_max: np.ndarray
    certified_bits: int  # bits of the (offset, non-negative) accumulator the circuit holds
    pbs_count: int = 0
    pbs_precision: int | None = None
    lsbs_to_remove: int = 0
    calibrated_min: int | None = None
    calibrated_max: int | None = None


@dataclass
class PostTrainingOptions:
    """How to quantize what a float graph leaves unquantized (post-training quantization)."""

    input_bits: int
    weight_bits: int
    activation_bits: int
    calibration: dict  # ONNX tensor name -> float values on the calibration set

    def calibrated_quantizer(self, tensor_name: str, options: QuantizationOptions):
        if tensor_name not in self.calibration:
            raise ValueError(f"No calibration data for tensor {tensor_name!r}.")
        return UniformQuantizer.from_values(options, self.calibration[tensor_name])


MAX_LOOKUP_BITS = 16
"""Widest table lookup concrete-python compiles."""


def _activation_tables(x: Encrypted, quantizer: UniformQuantizer, n_values: int) -> np.ndarray:
    """``tables[j, v]``: feature j's quantized activation for stored accumulator value v."""
    values = np.arange(n_values)
    view = apply_stages(x.stages, values[:, None])
    if np.isnan(view).any():  # e.g. a division by zero: it has no integer to round to
        raise ValueError("An activation is not a number (NaN) for some accumulator value.")
    return quantizer.quant(np.broadcast_to(view, (n_values, len(x.span)))).T


class ModuleBuilder:
    """Collects the program steps, the input quantizer and the layer reports of one graph.

    Each accumulator is rounded before its lookup as ``rounding_plan`` says, when the network
    trained with that rounding and made the plan, or by the bits ``rounding_threshold_bits``
    chooses from the certified ranges (post-training); not both.
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

    def add_linear(self, x: Encrypted, weight: np.ndarray, scale, bias, name: str) -> Encrypted:
        """Emit ``x @ weightᵀ`` on quantized ``x``; the float view adds ``scale`` and ``bias``.

        ``weight`` is the integer matrix (n_out, n_in). The accumulator bounds are exact
        (:func:`accumulator_range` over the input's grid).
        """
        if x.grid is None or len(x.feature_shape) != 1:
            raise ValueError(f"{name}: a linear layer needs a quantized 1-D input.")
        weight = np.asarray(weight, dtype=np.int64)
        if weight.shape[1] != x.feature_shape[0]:
            raise ValueError(
                f"{name}: weight has {weight.shape[1]} inputs, the tensor has {x.feature_shape[0]}."
            )
        centered_base = x.grid.base - x.grid.quantizer.zero_point
        constant = weight @ centered_base
        acc_min, acc_max = accumulator_range(weight, centered_base, centered_base + x.span)
        span = acc_max - acc_min
        step = LinearStep(weight, constant - acc_min, bits_for(span.max()))
        self.steps.append(step)
        self.layers.append(LayerReport(name, weight.shape[0], acc_min, acc_max, step.bit_width))
        stages = (Affine(scale, np.asarray(scale) * acc_min + np.asarray(bias)),)
        return Encrypted(span, stages, None, producer=step)

    def add_lookup(self, x: Encrypted, quantizer: UniformQuantizer) -> Encrypted:
        """Emit one table lookup per feature: ``quantizer(stages(stored))``."""
        if len(x.feature_shape) != 1:
            raise ValueError("A quantizer inside the circuit needs a 1-D tensor; flatten first.")
        if np.ndim(quantizer.scale) != 0:
            raise ValueError("Activation quantizers must have one scale for the whole tensor.")
        producer = x.producer
        lsbs = 0
        if isinstance(producer, LinearStep) and self._rounds:
            lsbs = self._choose_lsbs(x, quantizer)
            x = self._align_for_rounding(x, lsbs)
        unit = 1 << lsbs
        reachable_max = round_accumulator(x.span, lsbs)
        input_bits = max(bits_for(reachable_max.max()), lsbs + 1)
        if input_bits - lsbs > MAX_LOOKUP_BITS:
            raise ValueError(
                f"A table lookup would read a {input_bits - lsbs}-bit accumulator; FHE supports "
                f"at most {MAX_LOOKUP_BITS} bits. Lower the weight or activation bits, prune "
                "(n_accum_bits), or set rounding_threshold_bits."
            )
        if isinstance(producer, LinearStep):
            producer.bit_width = max(producer.bit_width, input_bits)

        grid_values = np.arange(2**input_bits)
        q = _activation_tables(x, quantizer, len(grid_values))
        reachable = (grid_values[None, :] <= reachable_max[:, None]) & (grid_values % unit == 0)
        q_min = np.where(reachable, q, np.iinfo(np.int64).max).min(axis=1)
        q_max = np.where(reachable, q, np.iinfo(np.int64).min).max(axis=1)
        tables = np.clip(q, q_min[:, None], q_max[:, None]) - q_min[:, None]
        span = q_max - q_min
        step = LookupStep(tables, input_bits, lsbs, bits_for(span.max()))
        self.steps.append(step)
        if isinstance(producer, LinearStep) and self.layers:
            report = self.layers[-1]
            report.pbs_count, report.pbs_precision = len(span), step.precision
            report.lsbs_to_remove = lsbs
        return Encrypted.on_grid(quantizer, q_min, span, producer=step)

    @property
    def _rounds(self) -> bool:
        return self.rounding_threshold_bits is not None or self.rounding_plan is not None

    def _choose_lsbs(self, x: Encrypted, quantizer: UniformQuantizer) -> int:
        """Low bits to round away before the lookup on the last linear layer's accumulator."""
        report = self.layers[-1]
        lo, hi = report.accumulator_min, report.accumulator_max
        if self.rounding_plan is not None:
            self._rounded_lookups += 1
            return self.rounding_plan.for_layer(self._rounded_lookups - 1)
        if self.rounding_threshold_bits == AUTO_ROUNDING:
            span_max = int(x.span.max())
            tables = _activation_tables(x, quantizer, span_max + 1)
            # at most what the margin allows; within that, the cheapest. Rounding up may carry
            # into a new top bit: the cost accounts for it, the margin still holds.
            allowed = min(auto_lsbs(tables, x.span), bits_for(span_max) - 1)
            return cheapest_lsbs(lo, hi, allowed)
        return lsbs_for_threshold(lo, hi, self.rounding_threshold_bits)

    def _align_for_rounding(self, x: Encrypted, lsbs: int) -> Encrypted:
        """Store the accumulator minus a multiple of ``2**lsbs`` instead of minus its minimum,
        so that rounding the stored value rounds the accumulator itself (see rounding.py)."""
        if not lsbs:
            return x
        lo = self.layers[-1].accumulator_min
        shift = lo - aligned_base(lo, lsbs)
        producer = x.producer
        producer.offset = producer.offset + shift
        span = x.span + shift
        producer.bit_width = max(producer.bit_width, bits_for(span.max()))
        stages = (Affine(1.0, -shift), *x.stages)
        return Encrypted(span, stages, None, producer=producer)

    def add_reshape(self, x: Encrypted, feature_shape: tuple[int, ...]) -> Encrypted:
        if x.grid is None:
            raise ValueError("Reshaping an accumulator before its quantizer is not supported.")
        step = ReshapeStep(feature_shape)
        self.steps.append(step)
        return Encrypted.on_grid(
            x.grid.quantizer,
            x.grid.base.reshape(feature_shape),
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
            return self.add_lookup(value, options.calibrated_quantizer(tensor_name, grid))
        raise ValueError(f"{consumer}: tensor {tensor_name!r} is a constant, not an activation.")

    def finish(self, output) -> Encrypted:
        """The graph's output value, once every node is translated; ValueError if the rounding
        plan does not match the graph's layers or the output is not encrypted."""
        plan = self.rounding_plan
        if plan is not None and self._rounded_lookups != len(plan.lsbs):
            raise ValueError(
                f"The rounding plan has {len(plan.lsbs)} layers for "
                f"{self._rounded_lookups} linear layers followed by a lookup."
            )
        if not isinstance(output, Encrypted):
            raise ValueError("The graph output does not depend on its input through any layer.")
        return output
