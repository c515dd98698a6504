"""Quantized implementations of the ONNX operators an MLP export contains.

Each class translates one ONNX node for the :class:`~.builder.ModuleBuilder`. Adding an operator
means one class here and one line in :data:`ONNX_OPS_TO_QUANTIZED_IMPL`.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from .quantizers import QuantizationOptions, UniformQuantizer
from .stages import (
    ACTIVATIONS,
    BINARY_OPERATIONS,
    Activation,
    Affine,
    Combination,
    append_stage,
)
from .values import ClearInput, Constant, Encrypted, QuantizedConstant


class QuantizedOp:
    """Base class: holds the node's attributes; ``apply`` returns the output value."""

    op_type = ""

    def __init__(self, attributes: dict):
        self.attributes = attributes

    def apply(self, builder, inputs: list, names: list[str], node_name: str):
        raise NotImplementedError


def _require(condition: bool, message: str):
    if not condition:
        raise ValueError(message)


def _float_value(value, what: str) -> np.ndarray:
    _require(isinstance(value, (Constant, QuantizedConstant)), f"{what} must be a constant tensor.")
    return np.asarray(value.value, dtype=np.float64)


class QuantizedGemm(QuantizedOp):
    """``Y = alpha · A @ op(B) + beta · C`` with A encrypted, B and C constants.

    Integer weights come from a preceding Quant node (QAT) or are quantized here, symmetric
    per tensor (post-training).
    """

    op_type = "Gemm"

    def _weight(self, builder, value, transposed: bool, node_name: str):
        """The integer matrix (n_out, n_in) and its scale per output neuron."""
        if isinstance(value, Constant):
            _require(
                builder.post_training is not None,
                f"{node_name}: float weights in a graph compiled as QAT; quantize the layer's "
                "weights (Brevitas QuantLinear) or use compile_torch_model.",
            )
            options = QuantizationOptions(
                builder.post_training.weight_bits, is_signed=True, is_symmetric=True
            )
            quantizer = UniformQuantizer.from_values(options, value.value)
            value = QuantizedConstant(
                quantizer.quant(value.value), np.asarray(quantizer.scale), np.asarray(0)
            )
        _require(isinstance(value, QuantizedConstant), f"{node_name}: weights must be constant.")
        _require(value.q.ndim == 2, f"{node_name}: weights must be a matrix.")
        q = value.q.T if transposed else value.q  # (n_in, n_out) as in A @ B
        scale = np.broadcast_to(value.scale, value.q.shape)
        zero_point = np.broadcast_to(value.zero_point, value.q.shape)
        scale, zero_point = (scale.T, zero_point.T) if transposed else (scale, zero_point)
        _require(
            np.all(scale == scale[:1]) and np.all(zero_point == zero_point[:1]),
            f"{node_name}: weight scales must be per tensor or per output neuron.",
        )
        return (q - zero_point).T, scale[0]

    def apply(self, builder, inputs, names, node_name):
        _require(not self.attributes.get("transA", 0), f"{node_name}: transA is not supported.")
        weight, weight_scale = self._weight(
            builder, inputs[1], bool(self.attributes.get("transB", 0)), node_name
        )
        x = builder.ensure_quantized(inputs[0], names[0], node_name)
        bias = 0.0
        if len(inputs) > 2 and inputs[2] is not None:
            bias = self.attributes.get("beta", 1.0) * _float_value(inputs[2], "A Gemm bias")
        scale = self.attributes.get("alpha", 1.0) * x.grid.quantizer.scale * weight_scale
        return builder.add_linear(x, weight, scale, bias, node_name)


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

    def apply(self, builder, inputs, names, node_name):
        mode = self.attributes.get("rounding_mode", b"ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        _require(mode == "ROUND", f"{node_name}: rounding mode {mode} is not supported.")
        scale = _float_value(inputs[1], "A Quant scale")
        zero_point = _float_value(inputs[2], "A Quant zero point")
        bit_width = float(_float_value(inputs[3], "A Quant bit width"))
        _require(
            bit_width.is_integer() and np.all(zero_point == np.rint(zero_point)),
            f"{node_name}: bit width and zero point must be integers.",
        )
        options = QuantizationOptions(
            int(bit_width),
            is_signed=bool(self.attributes.get("signed", 1)),
            is_narrow=bool(self.attributes.get("narrow", 0)),
        )
        x = inputs[0]
        if isinstance(x, (Constant, QuantizedConstant)):
            q = options.grid.clip(np.rint(x.value / scale) + zero_point)
            return QuantizedConstant(q.astype(np.int64), scale, zero_point.astype(np.int64))
        _require(
            scale.size == 1 and zero_point.size == 1,
            f"{node_name}: activation quantizers must have one scale and zero point.",
        )
        quantizer = UniformQuantizer(options, scale.item(), int(zero_point.item()))
        if isinstance(x, ClearInput):
            return builder.quantize_input(x, quantizer)
        return builder.add_lookup(x, quantizer)


class QuantizedActivation(QuantizedOp):
    """An elementwise activation: appended to the float view, fused into the next lookup."""

    def stage(self, inputs: list, node_name: str) -> Activation:
        """The activation as a stage; its parameters are the node's attributes."""
        return Activation(self.op_type, **self.attributes)

    def apply(self, builder, inputs, names, node_name):
        stage = self.stage(inputs, node_name)
        x = inputs[0]
        if isinstance(x, Constant):
            return Constant(stage(x.value))
        if isinstance(x, ClearInput):
            return ClearInput(x.feature_shape, x.preprocessing + (stage,))
        _require(isinstance(x, Encrypted), f"{node_name}: unsupported input.")
        return Encrypted(x.span, append_stage(x.stages, stage), None, producer=x.producer)


def _activation_class(op_type: str):
    return type(f"Quantized{op_type}", (QuantizedActivation,), {"op_type": op_type})


class QuantizedClip(QuantizedActivation):
    """``Clip(x, min, max)`` with constant bounds (ReLU6, Hardtanh); either may be absent."""

    op_type = "Clip"

    def stage(self, inputs, node_name):
        bounds = {}
        for name, value in zip(("low", "high"), inputs[1:3]):
            if value is not None:
                bound = _float_value(value, f"{node_name}: a Clip bound")
                _require(bound.size == 1, f"{node_name}: Clip bounds must be scalars.")
                bounds[name] = bound.item()
        return Activation(self.op_type, **bounds)


class QuantizedPRelu(QuantizedActivation):
    """``PRelu(x, slope)`` with one learned slope: a LeakyRelu with that slope."""

    op_type = "PRelu"

    def stage(self, inputs, node_name):
        slope = _float_value(inputs[1], f"{node_name}: the PRelu slope")
        _require(
            slope.size == 1,
            f"{node_name}: PReLU with one slope per channel is not supported; use "
            "torch.nn.PReLU(num_parameters=1).",
        )
        return Activation("LeakyRelu", alpha=slope.item())


class QuantizedElementwiseArithmetic(QuantizedOp):
    """Add, Sub, Mul, Div with one constant operand: an affine stage on the float view; of
    two functions of the same encrypted tensor: a :class:`~.stages.Combination`."""

    def _affine(self, constant: np.ndarray, constant_first: bool) -> Affine:
        if self.op_type == "Add":
            return Affine(1.0, constant)
        if self.op_type == "Sub":
            return Affine(-1.0, constant) if constant_first else Affine(1.0, -constant)
        if self.op_type == "Mul":
            return Affine(constant, 0.0)
        _require(not constant_first, "Dividing a constant by an activation is not supported.")
        return Affine(1.0 / constant, 0.0)

    def apply(self, builder, inputs, names, node_name):
        a, b = inputs
        if isinstance(a, Constant) and isinstance(b, Constant):
            return Constant(BINARY_OPERATIONS[self.op_type](a.value, b.value))
        if isinstance(a, Encrypted) and isinstance(b, Encrypted):
            return self._combine(a, b, node_name)
        constant_first = isinstance(a, (Constant, QuantizedConstant))
        x, constant = (b, a) if constant_first else (a, b)
        _require(
            isinstance(constant, (Constant, QuantizedConstant)),
            f"{node_name}: {self.op_type} of two activations is not supported.",
        )
        stage = self._affine(np.asarray(constant.value, dtype=np.float64), constant_first)
        if isinstance(x, ClearInput):
            return ClearInput(x.feature_shape, x.preprocessing + (stage,))
        return Encrypted(x.span, append_stage(x.stages, stage), None, producer=x.producer)

    def _combine(self, a: Encrypted, b: Encrypted, node_name: str) -> Encrypted:
        """Two float views of the same stored integers (a fork that joins again, as in SiLU's
        ``x · sigmoid(x)``): still one elementwise function of those integers."""
        _require(
            a.producer is b.producer and np.array_equal(a.span, b.span),
            f"{node_name}: {self.op_type} of two different activations is not supported; only "
            "of two functions of the same tensor (e.g. x * sigmoid(x)).",
        )
        stage = Combination(self.op_type, a.stages, b.stages)
        return Encrypted(a.span, (stage,), None, producer=a.producer)


def _arithmetic_class(op_type: str):
    return type(f"Quantized{op_type}", (QuantizedElementwiseArithmetic,), {"op_type": op_type})


class _Reshape:
    """A picklable reshape of each row of a clear batch."""

    def __init__(self, feature_shape):
        self.feature_shape = tuple(int(d) for d in feature_shape)

    def __call__(self, x):
        return np.reshape(x, (x.shape[0],) + self.feature_shape)


class QuantizedReshape(QuantizedOp):
    """Reshape or Flatten of every row; the leading batch axis is kept."""

    op_type = "Reshape"

    def _target_shape(self, x, inputs, node_name) -> tuple[int, ...]:
        shape = _float_value(inputs[1], "A Reshape shape").astype(np.int64)
        features = tuple(int(d) for d in shape[1:])
        if not self.attributes.get("allowzero", 0):  # a 0 copies the input's dimension
            features = tuple(x.feature_shape[i] if d == 0 else d for i, d in enumerate(features))
        total = int(np.prod(x.feature_shape))
        if -1 in features:
            known = int(np.prod([d for d in features if d != -1]))
            features = tuple(total // known if d == -1 else d for d in features)
        _require(
            int(np.prod(features)) == total,
            f"{node_name}: cannot reshape {x.feature_shape} to {features}.",
        )
        return features

    def apply(self, builder, inputs, names, node_name):
        x = inputs[0]
        if isinstance(x, Constant):
            return Constant(np.reshape(x.value, _float_value(inputs[1], "shape").astype(int)))
        features = self._target_shape(x, inputs, node_name)
        if isinstance(x, ClearInput):
            return ClearInput(features, x.preprocessing + (_Reshape(features),))
        return builder.add_reshape(x, features)


class QuantizedFlatten(QuantizedReshape):
    """Flatten with ``axis=1``: every row becomes a vector."""

    op_type = "Flatten"

    def _target_shape(self, x, inputs, node_name):
        _require(self.attributes.get("axis", 1) == 1, f"{node_name}: Flatten needs axis=1.")
        return (int(np.prod(x.feature_shape)),)


class QuantizedIdentity(QuantizedOp):
    """Identity and Dropout (inference): the input itself."""

    op_type = "Identity"

    def apply(self, builder, inputs, names, node_name):
        return inputs[0]


class QuantizedConstantNode(QuantizedOp):
    """An ONNX ``Constant`` node: its tensor, known at build time."""

    op_type = "Constant"

    def apply(self, builder, inputs, names, node_name):
        return Constant(numpy_helper.to_array(self.attributes["value"]).astype(np.float64))


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
    **{op: _arithmetic_class(op) for op in BINARY_OPERATIONS},
    **{op: _activation_class(op) for op in ACTIVATIONS if op not in ("Identity", "Clip")},
}
"""ONNX op type → the class that translates it into the integer program."""
