"""Accumulator intervals against brute force, and the certified-bits check."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qnn_sklearn.quantization.bounds import (
    AccumulatorOverflowError,
    accumulator_range,
    check_certified_bits,
    max_terms,
    signed_bits,
    signed_limit,
    worst_case_ends,
)


@st.composite
def layers(draw):
    """A small integer weight matrix and a per-input box ``lo ≤ x ≤ hi``."""
    n_out, n_in = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    weight = draw(hnp.arrays(np.int64, (n_out, n_in), elements=st.integers(-7, 7)))
    ends = draw(hnp.arrays(np.int64, (2, n_in), elements=st.integers(-4, 4)))
    return weight, ends.min(axis=0), ends.max(axis=0)


@settings(deadline=None, max_examples=80)
@given(layer=layers())
def test_accumulator_range_is_brute_force(layer):
    weight, lo, hi = layer
    inputs = np.array(list(itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi)))))
    accumulators = inputs @ weight.T
    acc_min, acc_max = accumulator_range(weight, lo, hi)
    np.testing.assert_array_equal(acc_min, accumulators.min(axis=0))
    np.testing.assert_array_equal(acc_max, accumulators.max(axis=0))


@settings(deadline=None, max_examples=60)
@given(
    weight=hnp.arrays(np.int64, (2, 3), elements=st.integers(-7, 7)),
    max_abs=st.integers(0, 5),
    lo_below=st.sampled_from([None, 0, 1]),
)
def test_worst_case_ends_are_the_grid_range(weight, max_abs, lo_below):
    """The pruner's ends, from the sums of each sign, are accumulator_range's on the box of a
    non-negative input grid (``lo_below`` None), a symmetric one (0) or a signed grid that
    reaches one step further down (1: the general formula)."""
    lo = 0 if lo_below is None else -max_abs - lo_below
    acc_min, acc_max = accumulator_range(weight, lo, max_abs)
    positive_sum = np.maximum(weight, 0).sum(axis=1)
    negative_sum = np.maximum(-weight, 0).sum(axis=1)
    max_end, min_end = worst_case_ends(positive_sum, negative_sum, lo, max_abs)
    np.testing.assert_array_equal(max_end, acc_max)
    np.testing.assert_array_equal(min_end, -acc_min)


@given(lo=st.integers(-600, 600), hi=st.integers(-600, 600))
def test_signed_bits_is_the_fewest_that_hold_the_range(lo, hi):
    lo, hi = min(lo, hi), max(lo, hi)
    fewest = next(n for n in range(1, 20) if -(2 ** (n - 1)) <= lo and hi <= 2 ** (n - 1) - 1)
    assert signed_bits(lo, hi) == fewest


@given(n_bits=st.integers(2, 16), max_w=st.integers(1, 8), max_x=st.integers(1, 16))
def test_max_terms_is_the_most_that_fit(n_bits, max_w, max_x):
    budget = signed_limit(n_bits)
    k = max_terms(budget, max_w, max_x)
    assert k * max_w * max_x <= budget < (k + 1) * max_w * max_x


def _layer(lo: int, hi: int):
    return SimpleNamespace(
        name="gemm", accumulator_min=np.array([lo]), accumulator_max=np.array([hi])
    )


def test_check_certified_bits():
    check_certified_bits([_layer(-127, 127), _layer(-128, 0)], 8)
    with pytest.raises(AccumulatorOverflowError, match=r"'gemm'.*\[0, 128\].*9 signed bits.*8"):
        check_certified_bits([_layer(0, 128)], 8)
    with pytest.raises(AccumulatorOverflowError, match="9 signed bits"):
        check_certified_bits([_layer(-129, 0)], 8)
