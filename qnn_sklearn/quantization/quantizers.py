"""Uniform affine quantization: the only place where floats become integers and back.

``q = clip(rint(x / scale) + zero_point, qmin, qmax)`` and ``x̂ = scale · (q − zero_point)``.
Rounding is half-to-even (``np.rint``), the rule torch and Brevitas use, so an imported Brevitas
quantizer gives the same integers here as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Grid


@dataclass(frozen=True)
class QuantizationOptions:
    """The integer grid of a quantizer: how many bits, signed or not, narrow or not.

    A narrow grid drops the most negative (signed) or the largest (unsigned) value, so that a
    signed grid is symmetric around zero.
    """

    n_bits: int
    is_signed: bool = False
    is_symmetric: bool = False
    is_narrow: bool = False

    def __post_init__(self):
        grid = self.grid  # validates n_bits
        if len(grid.levels) < 2 or (self.is_symmetric and self.is_signed and grid.qmax < 1):
            raise ValueError(
                f"A {self.n_bits}-bit {'signed' if self.is_signed else 'unsigned'}"
                f"{' narrow' if self.is_narrow else ''}"
                f"{' symmetric' if self.is_symmetric else ''} grid has no step to quantize "
                "with; raise n_bits."
            )

    @property
    def grid(self) -> Grid:
        """The integers this quantizer emits."""
        return Grid(self.n_bits, self.is_signed, self.is_narrow)

    @property
    def qmin(self) -> int:
        """Smallest integer of the grid."""
        return self.grid.qmin

    @property
    def qmax(self) -> int:
        """Largest integer of the grid."""
        return self.grid.qmax


class UniformQuantizer:
    """Maps floats to the integer grid of ``options`` with a given scale and zero point.

    Parameters
    ----------
    options : QuantizationOptions
        The integer grid.
    scale : float
        Float value of one integer step; must be positive.
    zero_point : int
        Integer that represents the float 0.
    """

    def __init__(self, options: QuantizationOptions, scale: float, zero_point: int = 0):
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"A quantizer scale must be finite and positive, got {scale}.")
        if options.is_symmetric and zero_point != 0:
            raise ValueError(f"A symmetric quantizer has zero_point 0, got {zero_point}.")
        self.options = options
        self.scale = scale
        self.zero_point = int(zero_point)

    @classmethod
    def from_values(cls, options: QuantizationOptions, values: np.ndarray) -> UniformQuantizer:
        """Calibrate scale and zero point so the grid spans ``values`` (and always 0).

        Keeping 0 inside the range makes it exactly representable, so zero padding and ReLU's
        zeros cost no error (Jacob et al. 2018).
        """
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError("Calibration values must be a non-empty array of finite floats.")
        qmin, qmax = options.qmin, options.qmax
        vmin, vmax = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        if options.is_symmetric:
            if options.is_signed:
                bound = max(abs(vmin), abs(vmax))
                scale = bound / qmax if bound > 0 else 1.0
            else:
                scale = vmax / qmax if vmax > 0 else 1.0
            return cls(options, scale, 0)
        if vmax == vmin:
            return cls(options, 1.0, int(np.clip(0, qmin, qmax)))
        scale = (vmax - vmin) / options.grid.span
        zero_point = int(np.clip(np.rint(qmin - vmin / scale), qmin, qmax))
        return cls(options, scale, zero_point)

    def quant(self, values: np.ndarray) -> np.ndarray:
        """Floats to integers (int64), clipped to the grid."""
        values = np.asarray(values, dtype=np.float64)
        q = np.rint(values / self.scale) + self.zero_point
        return self.options.grid.clip(q).astype(np.int64)

    def dequant(self, qvalues: np.ndarray) -> np.ndarray:
        """Integers to the floats they stand for."""
        return self.scale * (np.asarray(qvalues, dtype=np.float64) - self.zero_point)

    def __repr__(self) -> str:
        return (
            f"UniformQuantizer({self.options}, scale={self.scale:.6g}, "
            f"zero_point={self.zero_point})"
        )


class QuantizedArray:
    """An array of integers together with the quantizer that gives them a float meaning.

    Parameters
    ----------
    n_bits : int
        Bits of the integer grid.
    values : array-like
        Floats to quantize (``value_is_float=True``) or integers to wrap (``False``).
    value_is_float : bool
        Whether ``values`` are floats. Wrapping integers, for example the output of an FHE
        circuit, needs an explicit ``scale`` and ``zero_point``.
    is_signed, is_symmetric, is_narrow : bool
        The grid, see :class:`QuantizationOptions`.
    scale, zero_point : float, int, optional
        A fixed quantizer; when omitted the quantizer is calibrated on ``values``.
    """

    def __init__(
        self,
        n_bits: int,
        values,
        value_is_float: bool = True,
        is_signed: bool = False,
        is_symmetric: bool = False,
        is_narrow: bool = False,
        scale: float | None = None,
        zero_point: int | None = None,
    ):
        options = QuantizationOptions(n_bits, is_signed, is_symmetric, is_narrow)
        values = np.asarray(values)
        if scale is not None:
            zero_point = 0 if zero_point is None else zero_point
            self.quantizer = UniformQuantizer(options, scale, zero_point)
        elif value_is_float:
            self.quantizer = UniformQuantizer.from_values(options, values)
        else:
            raise ValueError(
                "Wrapping integers (value_is_float=False) needs an explicit scale and zero_point."
            )
        self.values = None
        self.qvalues = None
        self.update_values(values, value_is_float)

    @property
    def n_bits(self) -> int:
        return self.quantizer.options.n_bits

    @property
    def scale(self) -> float:
        return self.quantizer.scale

    @property
    def zero_point(self) -> int:
        return self.quantizer.zero_point

    def update_values(self, values, value_is_float: bool = True) -> np.ndarray:
        """Replace the content, keeping the quantizer; returns the new integers."""
        values = np.asarray(values)
        if value_is_float:
            self.values = values.astype(np.float64)
            self.qvalues = self.quantizer.quant(self.values)
        else:
            qvalues = values.astype(np.int64)
            options = self.quantizer.options
            if qvalues.size and (qvalues.min() < options.qmin or qvalues.max() > options.qmax):
                raise ValueError(
                    f"Integers outside the {options.n_bits}-bit grid "
                    f"[{options.qmin}, {options.qmax}] cannot be wrapped; check n_bits and signs."
                )
            self.qvalues = qvalues
            self.values = self.quantizer.dequant(qvalues)
        return self.qvalues

    def quant(self) -> np.ndarray:
        """The integers."""
        return self.qvalues

    def dequant(self) -> np.ndarray:
        """The floats the integers stand for."""
        return self.quantizer.dequant(self.qvalues)
