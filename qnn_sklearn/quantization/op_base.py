"""The base of the op classes: one ONNX node, translated by the value kind it acts on."""

from __future__ import annotations

import numpy as np

from .values import ClearInput, Constant, Encrypted, QuantizedConstant


class QuantizedOp:
    """Base class: holds the node's attributes; ``apply`` returns the output value.

    Most ops do one thing per kind of tensor they act on: fold a constant (``on_constant``),
    extend the clear pre-processing of the input (``on_clear_input``) or the encrypted program
    (``on_encrypted``). :meth:`apply` tells the kinds apart, once for every op, on the tensor
    :meth:`subject` names; an op that reads its inputs otherwise (Gemm) overrides ``apply``.
    """

    op_type = ""
    constant_kinds: tuple[type, ...] = (Constant,)
    """Values this op folds at build time."""
    quantizes_input = False
    """Whether an encrypted input must be integers on a grid (a layout op reads integers, not
    a float view): post-training, a calibrated quantizer is inserted before it."""

    def __init__(self, attributes: dict):
        self.attributes = attributes

    def apply(self, builder, inputs: list, names: list[str], node_name: str):
        x = self.subject(inputs, node_name)
        if isinstance(x, self.constant_kinds):
            return self.on_constant(x, inputs, node_name)
        if isinstance(x, ClearInput):
            return self.on_clear_input(builder, x, inputs, node_name)
        require(isinstance(x, Encrypted), f"{node_name}: unsupported input.")
        if self.quantizes_input:
            x = builder.ensure_quantized(x, names[0], node_name)
        return self.on_encrypted(builder, x, inputs, node_name)

    def subject(self, inputs: list, node_name: str):
        """The input whose kind decides what the op does: the first one."""
        return inputs[0]

    def on_constant(self, x, inputs: list, node_name: str):
        raise ValueError(f"{node_name}: {self.op_type} of a constant is not supported.")

    def on_clear_input(self, builder, x: ClearInput, inputs: list, node_name: str):
        raise ValueError(f"{node_name}: {self.op_type} of the clear input is not supported.")

    def on_encrypted(self, builder, x: Encrypted, inputs: list, node_name: str):
        raise ValueError(f"{node_name}: {self.op_type} of an encrypted tensor is not supported.")


def require(condition: bool, message: str):
    """ValueError(message) unless ``condition``: the graph holds what no op translates."""
    if not condition:
        raise ValueError(message)


def float_value(value, what: str) -> np.ndarray:
    """The float tensor of a constant input (``what`` names it in the error otherwise)."""
    require(isinstance(value, (Constant, QuantizedConstant)), f"{what} must be a constant tensor.")
    return np.asarray(value.value, dtype=np.float64)
