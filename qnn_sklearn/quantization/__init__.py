"""Integer quantization, quantized ONNX operators and the QuantizedModule."""

from .builder import LayerReport, PostTrainingOptions
from .module import DEFAULT_P_ERROR, QuantizedModule
from .ops import ONNX_OPS_TO_QUANTIZED_IMPL, QuantizedOp
from .quantizers import QuantizationOptions, QuantizedArray, UniformQuantizer

__all__ = [
    "DEFAULT_P_ERROR",
    "LayerReport",
    "ONNX_OPS_TO_QUANTIZED_IMPL",
    "PostTrainingOptions",
    "QuantizationOptions",
    "QuantizedArray",
    "QuantizedModule",
    "QuantizedOp",
    "UniformQuantizer",
]
