"""What an ONNX tensor is while a graph is being turned into an integer program.

A tensor is a known constant, the float model input (still in the clear, before its quantizer),
or an encrypted integer tensor with the float view that the stages give it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .quantizers import UniformQuantizer
from .stages import Affine, Stage


@dataclass
class Constant:
    """A float constant (an initializer or something folded from initializers)."""

    value: np.ndarray


@dataclass
class QuantizedConstant:
    """Integers ``q`` with ``value = scale · (q − zero_point)``, e.g. quantized weights.

    ``scale`` and ``zero_point`` broadcast against ``q`` (per tensor or per channel).
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray

    @property
    def value(self) -> np.ndarray:
        return self.scale * (self.q - self.zero_point)


@dataclass
class ClearInput:
    """The model input before it is quantized: what the client still holds in the clear.

    ``preprocessing`` lists the float functions (reshapes, elementwise maps) that the graph
    applies before the input quantizer; the client runs them.
    """

    feature_shape: tuple[int, ...]
    preprocessing: tuple = ()


@dataclass
class Grid:
    """Encrypted integers that stand for ``scale · (stored + offset)``: one scale for the whole
    tensor and an integer offset per feature.

    A quantizer's output is one (``offset = base − zero_point``); so are the sums, selections
    and poolings of such tensors, which is what lets a linear layer read them with integer
    weights, and a residual Add sum two of them exactly when their scales agree.
    """

    scale: float
    offset: np.ndarray


@dataclass
class Encrypted:
    """An encrypted tensor of non-negative integers ``stored ∈ [0, span]`` (per feature).

    ``stages`` map the stored integers to the float tensor of the ONNX graph. ``grid`` is set
    when the integers are the output of a quantizer, which linear layers need as input.
    """

    span: np.ndarray
    stages: tuple[Stage, ...]
    grid: Grid | None = None
    producer: object | None = field(default=None, repr=False)

    @classmethod
    def on_grid(cls, quantizer: UniformQuantizer, base, span, producer=None) -> Encrypted:
        """The stored integers of a quantizer's output, with its dequantization as the view."""
        offset = np.asarray(base, dtype=np.int64) - quantizer.zero_point
        return cls.integers(quantizer.scale, offset, span, producer)

    @classmethod
    def integers(cls, scale: float, offset, span, producer=None) -> Encrypted:
        """Stored integers ``[0, span]`` that stand for ``scale · (stored + offset)``."""
        offset = np.broadcast_to(np.asarray(offset, dtype=np.int64), np.shape(span))
        stages = (Affine(scale, scale * offset),)
        return cls(np.asarray(span, dtype=np.int64), stages, Grid(float(scale), offset), producer)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.span.shape
