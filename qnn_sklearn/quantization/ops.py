"""Quantized implementations of the ONNX operators, and their registry.

Each class translates one ONNX node for the :class:`~.builder.ModuleBuilder`: dense layers and
quantizers here, elementwise ops in elementwise_ops.py, Conv and BatchNormalization in
conv_ops.py, pooling in pooling_ops.py, Pad / Transpose / Concat in layout_ops.py, all on the
base in op_base.py. Adding
an operator means one class (a subclass of QuantizedOp, QuantizedActivation, ...) and one line
in :data:`ONNX_OPS_TO_QUANTIZED_IMPL`.
"""

from __future__ import annotations

import numpy as np

from .conv_ops import QuantizedBatchNormalization, QuantizedConv
from .elementwise_ops import (
    QuantizedAbs,
    QuantizedAdd,
    QuantizedCelu,
    QuantizedClip,
    QuantizedDiv,
    QuantizedElu,
    QuantizedErf,
    QuantizedGelu,
    QuantizedHardSigmoid,
    QuantizedHardSwish,
    QuantizedLeakyRelu,
    QuantizedMul,
    QuantizedPRelu,
    QuantizedRelu,
    QuantizedSelu,
    QuantizedSigmoid,
    QuantizedSoftplus,
    QuantizedSub,
    QuantizedTanh,
    QuantizedWhere,
)
from .layout_ops import QuantizedConcat, QuantizedPad, QuantizedTranspose
from .op_base import QuantizedOp, float_value, require
from .pooling_ops import QuantizedAveragePool, QuantizedGlobalAveragePool, QuantizedMaxPool
from .quantizers import QuantizationOptions, UniformQuantizer
from .values import ClearInput, Constant, QuantizedConstant
from .weights import integer_weight, per_output_scale


class QuantizedGemm(QuantizedOp):
    """``Y = alpha · A @ op(B) + beta · C`` with A encrypted, B and C constants.

    Integer weights: see :func:`~.weights.integer_weight`.
    """

    op_type = "Gemm"

    def apply(self, builder, inputs, names, node_name):
        require(not self.attributes.get("transA", 0), f"{node_name}: transA is not supported.")
        weight, scale = integer_weight(builder, inputs[1], node_name)
        require(weight.ndim == 2, f"{node_name}: weights must be a matrix.")
        if not self.attributes.get("transB", 0):  # (n_in, n_out) as in A @ B
            weight, scale = weight.T, scale.T
        x = builder.ensure_quantized(inputs[0], names[0], node_name)
        bias = None
        if len(inputs) > 2 and inputs[2] is not None:
            bias = self.attributes.get("beta", 1.0) * float_value(inputs[2], "A Gemm bias")
        scale = self.attributes.get("alpha", 1.0) * per_output_scale(scale, node_name)
        return builder.add_linear(x, weight, node_name, scale=scale, bias=bias)


class QuantizedMatMul(QuantizedGemm):
    """``Y = A @ B`` with B a constant: a Gemm without bias."""

    op_type = "MatMul"

    def __init__(self, attributes):
        super().__init__({})


class QuantizedBrevitasQuant(QuantizedOp):
    """QONNX ``Quant(x, scale, zero_point, bit_width)``: Brevitas' learned quantizers.

    On a constant it yields integer weights; on the clear input it becomes the input quantizer;
    on an encrypted tensor it becomes one table lookup per feature.
    """

    op_type = "Quant"

    constant_kinds = (Constant, QuantizedConstant)

    def _parameters(self, inputs, node_name):
        """The grid, scale and zero point the node's inputs and attributes give."""
        mode = self.attributes.get("rounding_mode", b"ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        require(mode == "ROUND", f"{node_name}: rounding mode {mode} is not supported.")
        scale = float_value(inputs[1], "A Quant scale")
        zero_point = float_value(inputs[2], "A Quant zero point")
        bit_width = float(float_value(inputs[3], "A Quant bit width"))
        require(
            bit_width.is_integer() and np.all(zero_point == np.rint(zero_point)),
            f"{node_name}: bit width and zero point must be integers.",
        )
        options = QuantizationOptions(
            int(bit_width),
            is_signed=bool(self.attributes.get("signed", 1)),
            is_narrow=bool(self.attributes.get("narrow", 0)),
        )
        return options, scale, zero_point

    def _activation_quantizer(self, inputs, node_name) -> UniformQuantizer:
        options, scale, zero_point = self._parameters(inputs, node_name)
        require(
            scale.size == 1 and zero_point.size == 1,
            f"{node_name}: activation quantizers must have one scale and zero point.",
        )
        return UniformQuantizer(options, scale.item(), int(zero_point.item()))

    def on_constant(self, x, inputs, node_name):
        options, scale, zero_point = self._parameters(inputs, node_name)
        q = options.grid.clip(np.rint(x.value / scale) + zero_point)
        return QuantizedConstant(q.astype(np.int64), scale, zero_point.astype(np.int64))

    def on_clear_input(self, builder, x, inputs, node_name):
        return builder.quantize_input(x, self._activation_quantizer(inputs, node_name))

    def on_encrypted(self, builder, x, inputs, node_name):
        return builder.add_lookup(x, self._activation_quantizer(inputs, node_name), node_name)


class _Reshape:
    """A picklable reshape of each row of a clear batch."""

    def __init__(self, feature_shape):
        self.feature_shape = tuple(int(d) for d in feature_shape)

    def __call__(self, x):
        return np.reshape(x, (x.shape[0],) + self.feature_shape)


class QuantizedReshape(QuantizedOp):
    """Reshape or Flatten of every row; the leading batch axis is kept."""

    op_type = "Reshape"
    quantizes_input = True

    def _target_shape(self, x, inputs, node_name) -> tuple[int, ...]:
        shape = float_value(inputs[1], "A Reshape shape").astype(np.int64)
        features = tuple(int(d) for d in shape[1:])
        if not self.attributes.get("allowzero", 0):  # a 0 copies the input's dimension
            features = tuple(x.feature_shape[i] if d == 0 else d for i, d in enumerate(features))
        total = int(np.prod(x.feature_shape))
        if -1 in features:
            known = int(np.prod([d for d in features if d != -1]))
            features = tuple(total // known if d == -1 else d for d in features)
        require(
            int(np.prod(features)) == total,
            f"{node_name}: cannot reshape {x.feature_shape} to {features}.",
        )
        return features

    def on_constant(self, x, inputs, node_name):
        return Constant(np.reshape(x.value, float_value(inputs[1], "shape").astype(int)))

    def on_clear_input(self, builder, x, inputs, node_name):
        features = self._target_shape(x, inputs, node_name)
        return ClearInput(features, x.preprocessing + (_Reshape(features),))

    def on_encrypted(self, builder, x, inputs, node_name):
        return builder.add_reshape(x, self._target_shape(x, inputs, node_name))


class QuantizedFlatten(QuantizedReshape):
    """Flatten with ``axis=1``: every row becomes a vector."""

    op_type = "Flatten"

    def _target_shape(self, x, inputs, node_name):
        require(self.attributes.get("axis", 1) == 1, f"{node_name}: Flatten needs axis=1.")
        return (int(np.prod(x.feature_shape)),)


class QuantizedIdentity(QuantizedOp):
    """Identity and Dropout (inference): the input itself."""

    op_type = "Identity"

    def apply(self, builder, inputs, names, node_name):
        return inputs[0]


class QuantizedConstantNode(QuantizedOp):
    """An ONNX ``Constant`` node: its tensor (a numpy array, as the importer reads it), known
    at build time."""

    op_type = "Constant"

    def apply(self, builder, inputs, names, node_name):
        return Constant(np.asarray(self.attributes["value"], dtype=np.float64))


ONNX_OPS_TO_QUANTIZED_IMPL: dict[str, type[QuantizedOp]] = {
    "Gemm": QuantizedGemm,
    "MatMul": QuantizedMatMul,
    "Quant": QuantizedBrevitasQuant,
    "Reshape": QuantizedReshape,
    "Flatten": QuantizedFlatten,
    "Identity": QuantizedIdentity,
    "Constant": QuantizedConstantNode,
    "Dropout": QuantizedIdentity,
    "Clip": QuantizedClip,
    "PRelu": QuantizedPRelu,
    "Add": QuantizedAdd,
    "Sub": QuantizedSub,
    "Mul": QuantizedMul,
    "Div": QuantizedDiv,
    "Relu": QuantizedRelu,
    "Sigmoid": QuantizedSigmoid,
    "Tanh": QuantizedTanh,
    "Elu": QuantizedElu,
    "Selu": QuantizedSelu,
    "LeakyRelu": QuantizedLeakyRelu,
    "Softplus": QuantizedSoftplus,
    "HardSigmoid": QuantizedHardSigmoid,
    "HardSwish": QuantizedHardSwish,
    "Celu": QuantizedCelu,
    "Gelu": QuantizedGelu,
    "Abs": QuantizedAbs,
    "Erf": QuantizedErf,
    "Where": QuantizedWhere,
    "Conv": QuantizedConv,
    "BatchNormalization": QuantizedBatchNormalization,
    "AveragePool": QuantizedAveragePool,
    "GlobalAveragePool": QuantizedGlobalAveragePool,
    "MaxPool": QuantizedMaxPool,
    "Pad": QuantizedPad,
    "Transpose": QuantizedTranspose,
    "Concat": QuantizedConcat,
}
"""ONNX op type → the class that translates it into the integer program."""
