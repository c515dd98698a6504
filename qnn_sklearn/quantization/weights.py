"""The integer weights of a layer (Gemm, Conv): learned by Brevitas, or quantized here."""

from __future__ import annotations

import numpy as np

from .op_base import require
from .quantizers import QuantizationOptions, UniformQuantizer
from .values import Constant, QuantizedConstant


def integer_weight(builder, value, node_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(q − zero_point, scale)``, both of the weight's shape.

    Integer weights come from a preceding Quant node (QAT) or are quantized here, symmetric per
    tensor (post-training), at ``weight_bits``.
    """
    if isinstance(value, Constant):
        require(
            builder.post_training is not None,
            f"{node_name}: float weights in a graph compiled as QAT; quantize the layer's "
            "weights (Brevitas QuantLinear / QuantConv2d) or use compile_torch_model.",
        )
        options = QuantizationOptions(
            builder.post_training.weight_bits, is_signed=True, is_symmetric=True
        )
        quantizer = UniformQuantizer.from_values(options, value.value)
        value = QuantizedConstant(
            quantizer.quant(value.value), np.asarray(quantizer.scale), np.asarray(0)
        )
    require(isinstance(value, QuantizedConstant), f"{node_name}: weights must be constant.")
    scale = np.broadcast_to(value.scale, value.q.shape)
    zero_point = np.broadcast_to(value.zero_point, value.q.shape)
    return value.q - zero_point, scale


def per_output_scale(scale: np.ndarray, node_name: str) -> np.ndarray:
    """The scale of each output (axis 0) of a weight tensor whose scales are per tensor or
    per output; ValueError otherwise (the integer sum needs one scale per output)."""
    flat = scale.reshape(scale.shape[0], -1)
    require(
        np.all(flat == flat[:, :1]),
        f"{node_name}: weight scales must be per tensor or per output channel.",
    )
    return flat[:, 0]
