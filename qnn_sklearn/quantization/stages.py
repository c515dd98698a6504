"""Elementwise float functions that ride on an encrypted integer tensor until a lookup table.

Between two quantizers, a network applies a chain of elementwise float functions to the integer
accumulator (rescale, bias, activation). We record that chain as *stages* instead of computing
it, then evaluate it once on every integer the accumulator can hold to fill one lookup table.
The chain left after the last layer runs on the client, in the clear, to dequantize the output.

Stages are small value objects that serialize to JSON, so a client can rebuild its
post-processing without unpickling anything.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf


class Stage:
    """An elementwise float function with per-feature parameters on the last axis."""

    kind: str = ""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_json(self) -> dict:
        raise NotImplementedError


class Affine(Stage):
    """``x ↦ scale · x + offset``; scale and offset broadcast over the last axis."""

    kind = "affine"

    def __init__(self, scale, offset):
        self.scale = np.asarray(scale, dtype=np.float64)
        self.offset = np.asarray(offset, dtype=np.float64)

    def __call__(self, x):
        return self.scale * np.asarray(x, dtype=np.float64) + self.offset

    def then(self, other: Affine) -> Affine:
        """The affine map ``other ∘ self``, so chains of affine stages stay one stage."""
        return Affine(other.scale * self.scale, other.scale * self.offset + other.offset)

    def to_json(self):
        return {"kind": self.kind, "scale": self.scale.tolist(), "offset": self.offset.tolist()}


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x, beta=1.0, threshold=20.0):
    scaled = beta * x
    return np.where(scaled > threshold, x, np.log1p(np.exp(np.minimum(scaled, threshold))) / beta)


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _celu(x, alpha=1.0):
    return np.maximum(x, 0.0) + np.minimum(0.0, alpha * np.expm1(np.minimum(x, 0.0) / alpha))


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _clip(x, low=None, high=None):
    """ONNX Clip: its bounds are optional inputs (absent: unbounded on that side)."""
    return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)


_SELU_ALPHA = 1.6732632423543772
_SELU_GAMMA = 1.0507009873554805

ACTIVATIONS = {
    "Relu": lambda x: np.maximum(x, 0.0),
    "Sigmoid": _sigmoid,
    "Tanh": np.tanh,
    "Elu": lambda x, alpha=1.0: _elu(x, alpha),
    "Selu": lambda x, alpha=_SELU_ALPHA, gamma=_SELU_GAMMA: gamma * _elu(x, alpha),
    "LeakyRelu": lambda x, alpha=0.01: np.where(x >= 0, x, alpha * x),
    "Softplus": _softplus,
    "Identity": lambda x: x,
    "HardSigmoid": lambda x, alpha=0.2, beta=0.5: np.clip(alpha * x + beta, 0.0, 1.0),
    "HardSwish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Celu": _celu,
    "Gelu": _gelu,
    "Clip": _clip,
    "Abs": np.abs,
    "Erf": erf,
}
"""numpy implementations of the activations an MLP export contains, by ONNX op type."""


class Activation(Stage):
    """One of :data:`ACTIVATIONS`, with its ONNX attributes."""

    kind = "activation"

    def __init__(self, op_type: str, **attributes):
        if op_type not in ACTIVATIONS:
            raise ValueError(f"No numpy implementation of activation {op_type!r}.")
        self.op_type = op_type
        self.attributes = {name: _attribute(value) for name, value in attributes.items()}

    def __call__(self, x):
        return ACTIVATIONS[self.op_type](np.asarray(x, dtype=np.float64), **self.attributes)

    def to_json(self):
        return {"kind": self.kind, "op_type": self.op_type, "attributes": self.attributes}


def _attribute(value) -> float | str:
    """An ONNX attribute as JSON holds it: a number, or text (e.g. Gelu's ``approximate``)."""
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else float(value)


BINARY_OPERATIONS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
"""The arithmetic ONNX op types that combine two tensors elementwise."""


class Combination(Stage):
    """``left(x) op right(x)``: two chains of stages on the same stored integers, combined.

    torch exports SiLU as ``x · sigmoid(x)``, Mish as ``x · tanh(softplus(x))``, Softsign as
    ``x / (1 + |x|)``: the graph forks and joins again before the next quantizer. Both
    branches read the same stored integer, so the result is still one elementwise function of
    it, and one table lookup.
    """

    kind = "combination"

    def __init__(self, op_type: str, left: tuple[Stage, ...], right: tuple[Stage, ...]):
        if op_type not in BINARY_OPERATIONS:
            raise ValueError(f"No elementwise combination {op_type!r}.")
        self.op_type, self.left, self.right = op_type, tuple(left), tuple(right)

    def __call__(self, x):
        operation = BINARY_OPERATIONS[self.op_type]
        return operation(apply_stages(self.left, x), apply_stages(self.right, x))

    def to_json(self):
        return {
            "kind": self.kind,
            "op_type": self.op_type,
            "left": [stage.to_json() for stage in self.left],
            "right": [stage.to_json() for stage in self.right],
        }


class Select(Stage):
    """ONNX ``Where`` with a constant condition and a constant on one side:
    ``where(condition, x, other)``, or ``where(condition, other, x)`` if not ``tensor_first``.
    Both broadcast against the features, as the graph's tensors do."""

    kind = "select"

    def __init__(self, condition, other, tensor_first: bool = True):
        self.condition = np.asarray(condition, dtype=bool)
        self.other = np.asarray(other, dtype=np.float64)
        self.tensor_first = bool(tensor_first)

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.tensor_first:
            return np.where(self.condition, x, self.other)
        return np.where(self.condition, self.other, x)

    def to_json(self):
        return {
            "kind": self.kind,
            "condition": self.condition.tolist(),
            "other": self.other.tolist(),
            "tensor_first": self.tensor_first,
        }


MAX_AVERAGED_BLOCKS = 64
"""Most output blocks a :class:`BlockMean` read from JSON may average."""


class BlockMean(Stage):
    """The mean of ``blocks`` equal blocks of the last axis: the outputs of networks that one
    circuit computes side by side (torch/averaged.py), each block dequantized with its own
    network's scale by the stages before this one. Not elementwise: only an output's last
    stage, run by the client."""

    kind = "block_mean"

    def __init__(self, blocks: int):
        if isinstance(blocks, bool) or not isinstance(blocks, int):
            raise ValueError(f"BlockMean needs an integer number of blocks, got {blocks!r}.")
        if not 1 <= blocks <= MAX_AVERAGED_BLOCKS:
            raise ValueError(f"BlockMean averages 1 to {MAX_AVERAGED_BLOCKS} blocks, not {blocks}.")
        self.blocks = blocks

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] % self.blocks:
            raise ValueError(f"{x.shape[-1]} outputs do not split into {self.blocks} blocks.")
        return x.reshape(*x.shape[:-1], self.blocks, -1).mean(axis=-2)

    def to_json(self):
        return {"kind": self.kind, "blocks": self.blocks}


MAX_COMBINATION_DEPTH = 8
"""Combinations nested deeper are refused when read from JSON (an exported MLP nests one)."""


def stage_from_json(data: dict, depth: int = 0) -> Stage:
    """Inverse of :meth:`Stage.to_json`; ``depth`` counts the enclosing combinations."""
    if data["kind"] == Affine.kind:
        return Affine(data["scale"], data["offset"])
    if data["kind"] == Activation.kind:
        return Activation(data["op_type"], **data["attributes"])
    if data["kind"] == BlockMean.kind:
        return BlockMean(data["blocks"])
    if data["kind"] == Select.kind:
        return Select(data["condition"], data["other"], data["tensor_first"])
    if data["kind"] == Combination.kind:
        if depth >= MAX_COMBINATION_DEPTH:
            raise ValueError(f"Stages nest more than {MAX_COMBINATION_DEPTH} combinations.")
        left, right = (
            tuple(stage_from_json(item, depth + 1) for item in data[side])
            for side in ("left", "right")
        )
        return Combination(data["op_type"], left, right)
    raise ValueError(f"Unknown stage kind {data['kind']!r}.")


def append_stage(stages: tuple[Stage, ...], stage: Stage) -> tuple[Stage, ...]:
    """Add ``stage`` after ``stages``, merging consecutive affine maps into one."""
    if stages and isinstance(stage, Affine) and isinstance(stages[-1], Affine):
        return stages[:-1] + (stages[-1].then(stage),)
    return stages + (stage,)


def apply_stages(stages: tuple[Stage, ...], x: np.ndarray) -> np.ndarray:
    """Evaluate the chain on ``x`` (integers or floats) in float64."""
    out = np.asarray(x, dtype=np.float64)
    for stage in stages:
        out = stage(out)
    return out
