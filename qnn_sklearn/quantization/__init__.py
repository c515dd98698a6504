"""Integer quantization, quantized ONNX operators and the QuantizedModule."""

from .compile_options import DEFAULT_P_ERROR, CompileOptions
from .module import QuantizedModule
from .op_base import QuantizedOp
from .ops import ONNX_OPS_TO_QUANTIZED_IMPL
from .quantizers import QuantizationOptions, QuantizedArray, UniformQuantizer
from .reports import LayerReport, PostTrainingOptions

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
