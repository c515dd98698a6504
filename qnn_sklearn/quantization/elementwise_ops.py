"""Elementwise ops: activations and arithmetic with a constant, each one class.

None of them is a program step of its own: each becomes a stage of its tensor's float view,
fused into the next table lookup (or folded, on constants and on the clear input).
"""

from __future__ import annotations

import numpy as np

from .op_base import QuantizedOp, float_value, require
from .stages import BINARY_OPERATIONS, Activation, Affine, Combination, Select, append_stage
from .values import ClearInput, Constant, Encrypted, QuantizedConstant


class QuantizedElementwise(QuantizedOp):
    """An elementwise function of one tensor (its :meth:`stage`): folded into a constant,
    appended to the clear input's pre-processing, or to an encrypted tensor's float view,
    where it is fused into the next lookup."""

    def stage(self, inputs: list, node_name: str):
        raise NotImplementedError

    def on_constant(self, x, inputs, node_name):
        return Constant(self.stage(inputs, node_name)(x.value))

    def on_clear_input(self, builder, x, inputs, node_name):
        return ClearInput(x.feature_shape, x.preprocessing + (self.stage(inputs, node_name),))

    def on_encrypted(self, builder, x, inputs, node_name):
        stages = append_stage(x.stages, self.stage(inputs, node_name))
        return Encrypted(x.span, stages, None, producer=x.producer)


class QuantizedActivation(QuantizedElementwise):
    """An activation whose parameters are the node's attributes."""

    def stage(self, inputs: list, node_name: str) -> Activation:
        return Activation(self.op_type, **self.attributes)


class QuantizedRelu(QuantizedActivation):
    op_type = "Relu"


class QuantizedSigmoid(QuantizedActivation):
    op_type = "Sigmoid"


class QuantizedTanh(QuantizedActivation):
    op_type = "Tanh"


class QuantizedElu(QuantizedActivation):
    op_type = "Elu"


class QuantizedSelu(QuantizedActivation):
    op_type = "Selu"


class QuantizedLeakyRelu(QuantizedActivation):
    op_type = "LeakyRelu"


class QuantizedSoftplus(QuantizedActivation):
    op_type = "Softplus"


class QuantizedHardSigmoid(QuantizedActivation):
    op_type = "HardSigmoid"


class QuantizedHardSwish(QuantizedActivation):
    op_type = "HardSwish"


class QuantizedCelu(QuantizedActivation):
    op_type = "Celu"


class QuantizedGelu(QuantizedActivation):
    op_type = "Gelu"


class QuantizedAbs(QuantizedActivation):
    op_type = "Abs"


class QuantizedErf(QuantizedActivation):
    """The error function: with it, GELU exported as ``x · (1 + erf(x / √2)) / 2`` (Div, Erf,
    Add, Mul, Mul) is one elementwise function of the stored integers (a Combination), so one
    lookup."""

    op_type = "Erf"


class QuantizedClip(QuantizedActivation):
    """``Clip(x, min, max)`` with constant bounds (ReLU6, Hardtanh); either may be absent."""

    op_type = "Clip"

    def stage(self, inputs, node_name):
        bounds = {}
        for name, value in zip(("low", "high"), inputs[1:3]):
            if value is not None:
                bound = float_value(value, f"{node_name}: a Clip bound")
                require(bound.size == 1, f"{node_name}: Clip bounds must be scalars.")
                bounds[name] = bound.item()
        return Activation(self.op_type, **bounds)


class QuantizedPRelu(QuantizedActivation):
    """``PRelu(x, slope)`` with one learned slope: a LeakyRelu with that slope."""

    op_type = "PRelu"

    def stage(self, inputs, node_name):
        slope = float_value(inputs[1], f"{node_name}: the PRelu slope")
        require(
            slope.size == 1,
            f"{node_name}: PReLU with one slope per channel is not supported; use "
            "torch.nn.PReLU(num_parameters=1).",
        )
        return Activation("LeakyRelu", alpha=slope.item())


class QuantizedWhere(QuantizedElementwise):
    """``Where(condition, X, Y)`` with a constant condition and one of X, Y constant: an
    elementwise selection (a :class:`~.stages.Select` stage), fused into the next lookup."""

    op_type = "Where"

    def apply(self, builder, inputs, names, node_name):
        condition, a, b = inputs
        require(
            isinstance(condition, Constant),
            f"{node_name}: Where needs a constant condition (it selects in the clear).",
        )
        if isinstance(a, Constant) and isinstance(b, Constant):
            return Constant(np.where(condition.value != 0, a.value, b.value))
        return super().apply(builder, inputs, names, node_name)

    def subject(self, inputs, node_name):
        tensors = [v for v in inputs[1:] if not isinstance(v, (Constant, QuantizedConstant))]
        require(
            len(tensors) == 1,
            f"{node_name}: Where of two activations is not supported; one side must be constant.",
        )
        return tensors[0]

    def stage(self, inputs, node_name) -> Select:
        condition, a, b = inputs
        tensor_first = not isinstance(a, (Constant, QuantizedConstant))
        other = b if tensor_first else a
        return Select(condition.value != 0, other.value, tensor_first)


class QuantizedElementwiseArithmetic(QuantizedElementwise):
    """Add, Sub, Mul, Div with one constant operand: an affine stage (:meth:`affine`) on the
    float view; of two functions of the same encrypted tensor: a
    :class:`~.stages.Combination`."""

    def affine(self, constant: np.ndarray, constant_first: bool) -> Affine:
        """``x op constant`` (or ``constant op x``) as ``x ↦ scale · x + offset``."""
        raise NotImplementedError

    def apply(self, builder, inputs, names, node_name):
        a, b = inputs
        if isinstance(a, Constant) and isinstance(b, Constant):
            return Constant(BINARY_OPERATIONS[self.op_type](a.value, b.value))
        if isinstance(a, Encrypted) and isinstance(b, Encrypted) and _same_integers(a, b):
            return self._combine(a, b)
        tensors = (Encrypted, ClearInput)
        if isinstance(a, tensors) and isinstance(b, tensors) and Encrypted in (type(a), type(b)):
            return self._sum_of_tensors(builder, inputs, names, node_name)
        return super().apply(builder, inputs, names, node_name)

    def _sum_of_tensors(self, builder, inputs, names, node_name):
        """Two different encrypted tensors (a residual connection): see QuantizedAdd."""
        raise ValueError(
            f"{node_name}: {self.op_type} of two different activations is not supported; only "
            "of two functions of the same tensor (e.g. x * sigmoid(x))."
        )

    def _operands(self, inputs, node_name):
        """``(tensor, constant, constant_first)``."""
        a, b = inputs
        constant_first = isinstance(a, (Constant, QuantizedConstant))
        x, constant = (b, a) if constant_first else (a, b)
        require(
            isinstance(constant, (Constant, QuantizedConstant)),
            f"{node_name}: {self.op_type} of two activations is not supported.",
        )
        return x, constant, constant_first

    def subject(self, inputs, node_name):
        return self._operands(inputs, node_name)[0]

    def stage(self, inputs, node_name) -> Affine:
        _, constant, constant_first = self._operands(inputs, node_name)
        return self.affine(np.asarray(constant.value, dtype=np.float64), constant_first)

    def _combine(self, a: Encrypted, b: Encrypted) -> Encrypted:
        """Two float views of the same stored integers (a fork that joins again, as in SiLU's
        ``x · sigmoid(x)``): still one elementwise function of those integers."""
        stage = Combination(self.op_type, a.stages, b.stages)
        return Encrypted(a.span, (stage,), None, producer=a.producer)


def _same_integers(a: Encrypted, b: Encrypted) -> bool:
    return a.producer is b.producer and np.array_equal(a.span, b.span)


class QuantizedResidual(QuantizedElementwiseArithmetic):
    """Add or Sub of two different encrypted tensors (a residual connection): both are
    brought to one grid (``ModuleBuilder.common_grid``: the same quantizer with QAT, a
    re-quantizing lookup of the finer one post-training), then their integers are summed
    exactly by a leveled SumStep, whose bounds are the sum of the terms' (interval
    arithmetic). The sum is integers on that grid again: a linear layer reads it directly, an
    activation waits for the next lookup."""

    sign = 1

    def _sum_of_tensors(self, builder, inputs, names, node_name):
        a, b = builder.common_grid(list(inputs), list(names), node_name)
        require(
            a.feature_shape == b.feature_shape,
            f"{node_name}: {self.op_type} of tensors of shapes {a.feature_shape} and "
            f"{b.feature_shape}; broadcasting two encrypted tensors is not supported.",
        )
        return builder.add_sum([a, b], [1, self.sign], node_name, a.grid.scale)


class QuantizedAdd(QuantizedResidual):
    op_type = "Add"

    def affine(self, constant, constant_first):
        return Affine(1.0, constant)


class QuantizedSub(QuantizedResidual):
    op_type = "Sub"
    sign = -1

    def affine(self, constant, constant_first):
        return Affine(-1.0, constant) if constant_first else Affine(1.0, -constant)


class QuantizedMul(QuantizedElementwiseArithmetic):
    op_type = "Mul"

    def affine(self, constant, constant_first):
        return Affine(constant, 0.0)


class QuantizedDiv(QuantizedElementwiseArithmetic):
    op_type = "Div"

    def affine(self, constant, constant_first):
        require(not constant_first, "Dividing a constant by an activation is not supported.")
        return Affine(1.0 / constant, 0.0)
