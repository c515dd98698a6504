"""ONNX export of torch and Brevitas models, a numpy evaluator of ONNX graphs, and the importer
of ONNX graphs into integer QuantizedModules."""

from .evaluate import evaluate_onnx
from .export import export_brevitas_to_qonnx, export_torch_to_onnx
from .importer import UnsupportedOperatorError, import_onnx

__all__ = [
    "UnsupportedOperatorError",
    "evaluate_onnx",
    "export_brevitas_to_qonnx",
    "export_torch_to_onnx",
    "import_onnx",
]
