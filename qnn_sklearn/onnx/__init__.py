"""ONNX export of torch and Brevitas models, and a numpy evaluator of ONNX graphs."""

from .evaluate import evaluate_onnx
from .export import export_brevitas_to_qonnx, export_torch_to_onnx

__all__ = ["evaluate_onnx", "export_brevitas_to_qonnx", "export_torch_to_onnx"]
