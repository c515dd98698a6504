"""The integer program a QuantizedModule runs: one numpy function, traced three ways.

Each step maps non-negative integers to non-negative integers. The same step objects run on
numpy arrays (the clear integer forward) and on concrete-python tracers (the FHE circuit, which
is then simulated or executed), so the three agree bit for bit by construction.

A program is a list of steps that may fork and join (a residual block reads a tensor twice).
Each step reads the values its ``sources`` name: indices into the values computed so far,
where 0 is the program's input, ``k + 1`` the output of step ``k``, and a negative index counts
back from the latest value as Python lists do (the default, ``(-1,)``, reads the previous
step's output, so a plain chain needs no indices). The program's output is its last value.

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


class Step:
    """What every step shares: the values it reads (see the module docstring)."""

    sources: tuple[int, ...] = (-1,)


class LinearStep(Step):
    """``y = x @ weightᵀ + offset`` on each row's flattened features: leveled (no bootstrap).

    ``offset`` folds the input's zero point and base and the accumulator's certified minimum,
    so ``y`` lies in ``[0, 2**bit_width)`` for every input the previous step can produce.
    Convolutions, pooling sums and padding are such maps too (``linear_maps.py`` unrolls them
    into ``weight``); ``output_shape`` gives the result its (C, H, W) layout back.
    """

    def __init__(
        self,
        weight: np.ndarray,
        offset: np.ndarray,
        bit_width: int,
        output_shape: tuple[int, ...] | None = None,
    ):
        self.weight_t = np.ascontiguousarray(np.asarray(weight, dtype=np.int64).T)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.bit_width = int(bit_width)
        self.output_shape = None if output_shape is None else tuple(int(d) for d in output_shape)

    def __call__(self, x):
        if x.ndim != 2:
            x = x.reshape((x.shape[0], -1))
        y = x @ self.weight_t + self.offset
        if self.output_shape is not None:
            y = y.reshape((y.shape[0],) + self.output_shape)
        # after the reshape: concrete-python sizes a reshape's output from the inputset
        return fhe.hint(y, bit_width=self.bit_width)


class LookupStep(Step):
    """One programmable bootstrap per element: optional rounding, then a per-feature table.

    ``tables[j, v]`` is the re-quantized activation of feature ``j`` for accumulator value ``v``.
    Rounding removes ``lsbs_to_remove`` low bits first (concrete-python's ``round_bit_pattern``,
    round half up), so the bootstrap runs at ``input_bits - lsbs_to_remove`` bits.
    """

    def __init__(
        self,
        tables: np.ndarray,
        input_bits: int,
        lsbs_to_remove: int,
        output_bits: int,
        feature_shape: tuple[int, ...] | None = None,
        shift=0,
    ):
        """``tables`` has one row per feature, in the order of the flattened ``feature_shape``.
        ``shift`` is added before rounding (see ``ModuleBuilder._align_for_rounding``)."""
        self.tables = np.asarray(tables, dtype=np.int64)
        self.input_bits = int(input_bits)
        self.lsbs_to_remove = int(lsbs_to_remove)
        self.output_bits = int(output_bits)
        shape = (self.tables.shape[0],) if feature_shape is None else tuple(feature_shape)
        self._features = np.arange(self.tables.shape[0]).reshape(shape)
        self.shift = np.asarray(shift, dtype=np.int64)

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
            if np.any(self.shift):
                x = fhe.hint(x + self.shift, bit_width=self.input_bits)
            # The producing LinearStep's bit width already holds the largest rounded value, so
            # no overflow is possible. concrete-python's own protection looks at the inputset
            # bounds, not at the hint, and then rounds by the wrong number of bits.
            x = fhe.round_bit_pattern(
                x, lsbs_to_remove=self.lsbs_to_remove, overflow_protection=False
            )
        return fhe.hint(fhe.univariate(self._lookup)(x), bit_width=self.output_bits)


class ReshapeStep(Step):
    """Reshape the features of each row; the leading (batch) axis is kept.

    ``bit_width`` (the input's certified bits) is hinted on the result: concrete-python would
    otherwise size a reshape's output from the inputset's values, not from the bounds.
    """

    def __init__(self, feature_shape: tuple[int, ...], bit_width: int | None = None):
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.bit_width = bit_width

    def __call__(self, x):
        y = x.reshape((x.shape[0],) + self.feature_shape)
        return y if self.bit_width is None else fhe.hint(y, bit_width=self.bit_width)


class SumStep(Step):
    """``y = Σ signs[i] · sources[i] + constant``: leveled. Residual Add and Sub, and the
    differences and sums of MaxPool's pairwise maxima.

    ``constant`` is the sum of the spans of the subtracted terms, so that ``y ≥ 0``.
    """

    def __init__(self, sources, signs, constant, bit_width: int):
        self.sources = tuple(int(i) for i in sources)
        self.signs = tuple(int(s) for s in signs)
        self.constant = np.asarray(constant, dtype=np.int64)
        self.bit_width = int(bit_width)

    def __call__(self, *terms):
        total = terms[0] if self.signs[0] > 0 else -terms[0]
        for sign, term in zip(self.signs[1:], terms[1:]):
            total = total + term if sign > 0 else total - term
        return fhe.hint(total + self.constant, bit_width=self.bit_width)


class GatherStep(Step):
    """Each row's output features picked from its sources' flattened, concatenated features.

    No arithmetic, so no bootstrap and no noise: Transpose, Concat and the windows of MaxPool.
    ``bit_width`` is hinted on the result, as :class:`ReshapeStep` does.
    """

    def __init__(self, sources, index: np.ndarray, output_shape: tuple[int, ...], bit_width: int):
        self.sources = tuple(int(i) for i in sources)
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self.output_shape = tuple(int(d) for d in output_shape)
        self.bit_width = int(bit_width)

    def __call__(self, *terms):
        rows = terms[0].shape[0]
        flat = tuple(term.reshape((rows, -1)) for term in terms)
        features = flat[0] if len(flat) == 1 else np.concatenate(flat, axis=1)
        selected = features[:, self.index].reshape((rows,) + self.output_shape)
        return fhe.hint(selected, bit_width=self.bit_width)


def program_values(steps, x) -> list:
    """Every value of the program on ``x`` (numpy arrays or concrete-python tracers): the
    input, then each step's output."""
    values = [x]
    for step in steps:
        values.append(step(*(values[i] for i in step.sources)))
    return values


def run_program(steps, x):
    """The program's output: its last value."""
    return program_values(steps, x)[-1]
