"""The integer program a QuantizedModule runs: one numpy function, traced three ways.

Each step maps non-negative integers to non-negative integers. The same step objects run on
numpy arrays (the clear integer forward) and on concrete-python tracers (the FHE circuit, which
is then simulated or executed), so the three agree bit for bit by construction.

Every encrypted integer is kept non-negative: inputs, accumulators and lookup outputs are stored
minus their certified minimum. Unsigned values let concrete-python size each one from a
single bit width hint, with no signedness to guess from a calibration set.
"""

from __future__ import annotations

import numpy as np

from ..fhe_runtime import fhe


def bits_for(max_value: int) -> int:
    """Bits of an unsigned integer that holds ``0..max_value``."""
    return max(int(max_value).bit_length(), 1)


class LinearStep:
    """``y = x @ weightᵀ + offset``: leveled (no bootstrap) in FHE.

    ``offset`` folds the input's zero point and base and the accumulator's certified minimum,
    so ``y`` lies in ``[0, 2**bit_width)`` for every input the previous step can produce.
    """

    def __init__(self, weight: np.ndarray, offset: np.ndarray, bit_width: int):
        self.weight_t = np.ascontiguousarray(np.asarray(weight, dtype=np.int64).T)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.bit_width = int(bit_width)

    def __call__(self, x):
        return fhe.hint(x @ self.weight_t + self.offset, bit_width=self.bit_width)


class LookupStep:
    """One programmable bootstrap per element: optional rounding, then a per-feature table.

    ``tables[j, v]`` is the re-quantized activation of feature ``j`` for accumulator value ``v``.
    Rounding removes ``lsbs_to_remove`` low bits first (concrete-python's ``round_bit_pattern``,
    round half up), so the bootstrap runs at ``input_bits - lsbs_to_remove`` bits.
    """

    def __init__(self, tables: np.ndarray, input_bits: int, lsbs_to_remove: int, output_bits: int):
        self.tables = np.asarray(tables, dtype=np.int64)
        self.input_bits = int(input_bits)
        self.lsbs_to_remove = int(lsbs_to_remove)
        self.output_bits = int(output_bits)
        self._features = np.arange(self.tables.shape[0])

    @property
    def precision(self) -> int:
        """Bits of the bootstrap's input."""
        return self.input_bits - self.lsbs_to_remove

    def _lookup(self, values):
        # Clipping only matters for values no input can produce (concrete-python evaluates the
        # function over the whole bit range when it builds the table).
        index = np.minimum(values, self.tables.shape[1] - 1)
        return self.tables[self._features, index]

    def __call__(self, x):
        if self.lsbs_to_remove:
            # The producing LinearStep's bit width already holds the largest rounded value, so
            # no overflow is possible. concrete-python's own protection looks at the inputset
            # bounds, not at the hint, and then rounds by the wrong number of bits.
            x = fhe.round_bit_pattern(
                x, lsbs_to_remove=self.lsbs_to_remove, overflow_protection=False
            )
        return fhe.hint(fhe.univariate(self._lookup)(x), bit_width=self.output_bits)


class ReshapeStep:
    """Reshape the features of each row; the leading (batch) axis is kept."""

    def __init__(self, feature_shape: tuple[int, ...]):
        self.feature_shape = tuple(int(d) for d in feature_shape)

    def __call__(self, x):
        return x.reshape((x.shape[0],) + self.feature_shape)


def run_program(steps, x):
    """Apply the steps in order (numpy arrays or concrete-python tracers)."""
    for step in steps:
        x = step(x)
    return x
