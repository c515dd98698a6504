"""Grid: the integers of a quantizer, against a brute-force enumeration of its levels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qnn_sklearn.quantization.grid import Grid


def _enumerated_levels(n_bits: int, signed: bool, narrow: bool) -> list[int]:
    """Every ``n_bits`` bit pattern read as two's complement (signed) or unsigned, then the
    extreme level dropped when narrow: the lowest if signed, the highest otherwise."""
    levels = []
    for bits in itertools.product((0, 1), repeat=n_bits):
        value = int("".join(map(str, bits)), 2)
        if signed and bits[0]:
            value -= 2**n_bits
        levels.append(value)
    levels.sort()
    if narrow:
        levels = levels[1:] if signed else levels[:-1]
    return levels


@settings(deadline=None, max_examples=80)
@given(n_bits=st.integers(1, 10), signed=st.booleans(), narrow=st.booleans())
def test_grid_matches_enumerated_levels(n_bits, signed, narrow):
    grid = Grid(n_bits, signed, narrow)
    levels = _enumerated_levels(n_bits, signed, narrow)
    assert list(grid.levels) == levels
    assert (grid.qmin, grid.qmax) == (levels[0], levels[-1])
    assert grid.max_abs == max(abs(v) for v in levels)
    assert grid.span == len(levels) - 1
    values = np.arange(levels[0] - 3, levels[-1] + 4)
    np.testing.assert_array_equal(grid.clip(values), np.clip(values, levels[0], levels[-1]))


@pytest.mark.parametrize("n_bits", [0, -1, 2.0, True, "3"])
def test_grid_refuses_bad_bits(n_bits):
    with pytest.raises(ValueError, match="n_bits"):
        Grid(n_bits)
