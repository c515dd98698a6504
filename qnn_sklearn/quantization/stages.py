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
}
"""numpy implementations of the activations an MLP export contains, by ONNX op type."""


class Activation(Stage):
    """One of :data:`ACTIVATIONS`, with its ONNX attributes."""

    kind = "activation"

    def __init__(self, op_type: str, **attributes):
        if op_type not in ACTIVATIONS:
            raise ValueError(f"No numpy implementation of activation {op_type!r}.")
        self.op_type = op_type
        self.attributes = {name: float(value) for name, value in attributes.items()}

    def __call__(self, x):
        return ACTIVATIONS[self.op_type](np.asarray(x, dtype=np.float64), **self.attributes)

    def to_json(self):
        return {"kind": self.kind, "op_type": self.op_type, "attributes": self.attributes}


def stage_from_json(data: dict) -> Stage:
    """Inverse of :meth:`Stage.to_json`."""
    if data["kind"] == Affine.kind:
        return Affine(data["scale"], data["offset"])
    if data["kind"] == Activation.kind:
        return Activation(data["op_type"], **data["attributes"])
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
