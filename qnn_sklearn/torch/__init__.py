"""From torch and Brevitas models to compiled QuantizedModules."""

from .compile import (
    build_brevitas_qat_model,
    build_torch_model,
    compile_brevitas_qat_model,
    compile_torch_model,
)

__all__ = [
    "build_brevitas_qat_model",
    "build_torch_model",
    "compile_brevitas_qat_model",
    "compile_torch_model",
]
