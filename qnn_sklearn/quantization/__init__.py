"""Integer quantization, quantized ONNX operators and the QuantizedModule."""

from .builder import LayerReport, PostTrainingOptions
from .compile_options import DEFAULT_P_ERROR, CompileOptions
from .module import QuantizedModule
from .ops import ONNX_OPS_TO_QUANTIZED_IMPL, QuantizedOp
from .quantizers import QuantizationOptions, QuantizedArray, UniformQuantizer

__all__ = [
    "DEFAULT_P_ERROR",
    "CompileOptions",
    "LayerReport",
    "ONNX_OPS_TO_QUANTIZED_IMPL",
    "PostTrainingOptions",
    "QuantizationOptions",
    "QuantizedArray",
    "QuantizedModule",
    "QuantizedOp",
    "UniformQuantizer",
]
