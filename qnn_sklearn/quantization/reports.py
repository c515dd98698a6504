"""What the builder records per layer, and the settings of post-training quantization."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quantizers import QuantizationOptions, UniformQuantizer


@dataclass
class LayerReport:
    """What one layer costs and why it cannot overflow.

    A layer is a step whose integers a lookup may read (a linear map, a residual sum, the
    differences of a MaxPool), or a lookup that reads no such step. ``value_index`` names the
    program value whose stored integers plus ``accumulator_min`` are the accumulator.
    """

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
    value_index: int | None = None


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
