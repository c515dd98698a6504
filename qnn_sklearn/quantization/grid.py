"""The integer grid of a quantizer: the one place that turns bits, sign and narrowness into a range.

Every caller that needs the integers a quantizer can emit (the numpy quantizers, the ONNX
evaluator, the op that imports QONNX ``Quant`` nodes, the pruner of SparseQuantNeuralNetwork
and the tests) asks a :class:`Grid`, so the torch side budgets with the very range the integer
model certifies.

Signed: ``[−2^(n−1) (+1 if narrow), 2^(n−1) − 1]``; unsigned: ``[0, 2^n − 1 (−1 if narrow)]``.
A narrow grid drops the most negative (signed) or the largest (unsigned) level, so that a signed
grid is symmetric around zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """The integers of an ``n_bits`` quantizer.

    Parameters
    ----------
    n_bits : int
        Bits of the grid, at least 1.
    signed : bool
        Whether the grid holds negative integers.
    narrow : bool
        Whether the extreme level is dropped (see the module docstring).
    """

    n_bits: int
    signed: bool = False
    narrow: bool = False

    def __post_init__(self):
        if not isinstance(self.n_bits, (int, np.integer)) or isinstance(self.n_bits, bool):
            raise ValueError(f"n_bits must be an integer, got {self.n_bits!r}.")
        if self.n_bits < 1:
            raise ValueError(f"n_bits must be at least 1, got {self.n_bits}.")

    @property
    def qmin(self) -> int:
        """Smallest integer of the grid."""
        if self.signed:
            return -(2 ** (int(self.n_bits) - 1)) + int(self.narrow)
        return 0

    @property
    def qmax(self) -> int:
        """Largest integer of the grid."""
        if self.signed:
            return 2 ** (int(self.n_bits) - 1) - 1
        return 2 ** int(self.n_bits) - 1 - int(self.narrow)

    @property
    def max_abs(self) -> int:
        """Largest magnitude on the grid: what an accumulator budget multiplies."""
        return max(-self.qmin, self.qmax)

    @property
    def span(self) -> int:
        """``qmax − qmin``: the largest value of the grid shifted to start at 0 (what the circuit
        receives, ``q − qmin``), and the number of steps between its ends."""
        return self.qmax - self.qmin

    @property
    def levels(self) -> range:
        """Every integer of the grid, in increasing order."""
        return range(self.qmin, self.qmax + 1)

    def clip(self, values: np.ndarray) -> np.ndarray:
        """``values`` clipped to ``[qmin, qmax]``."""
        return np.clip(values, self.qmin, self.qmax)
