"""Rounding before lookups: the kept precision is exactly the threshold, "auto" picks the bits
from the tables, and clear == simulation either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnn_sklearn.quantization.program import bits_for
from qnn_sklearn.quantization.rounding import (
    RoundingPlan,
    _too_wide,
    aligned_base,
    auto_lsbs,
    carry_free_limit,
    cheapest_lsbs,
    check_rounding_threshold_bits,
    lookup_precision,
    lsbs_for_threshold,
    round_accumulator,
)
from qnn_sklearn.torch import build_torch_model


@settings(max_examples=300, deadline=None)
@given(
    ranges=st.lists(
        st.tuples(st.integers(-(2**13), 0), st.integers(0, 2**13)), min_size=1, max_size=6
    ),
    threshold=st.integers(1, 10),
)
def test_lsbs_for_threshold_equals_the_search_from_zero(ranges, threshold):
    """The search's head start (the bits no count below can do) skips no answer: over
    several neurons it finds the first count, from 0 up, whose lookups fit."""
    lo, hi = (np.array(ends) for ends in zip(*ranges))
    first_fit = next(lsbs for lsbs in range(40) if lookup_precision(lo, hi, lsbs) <= threshold)
    assert lsbs_for_threshold(lo, hi, threshold) == first_fit


@settings(max_examples=500, deadline=None)
@given(
    lo=st.integers(-(2**13), 2**13),
    width=st.integers(0, 2**14),
    lsbs=st.integers(0, 14),
    threshold=st.integers(1, 10),
)
def test_the_search_starts_only_past_counts_that_cannot_fit(lo, width, lsbs, threshold):
    """The head start's bound: a range it calls too wide reads more than ``threshold`` bits
    wherever it lies; at 0 bits removed it is exact."""
    precision = lookup_precision(np.array([lo]), np.array([lo + width]), lsbs)
    if _too_wide(width, lsbs, threshold):
        assert precision > threshold
    if lsbs == 0:
        assert _too_wide(width, lsbs, threshold) == (precision > threshold)


@settings(max_examples=300, deadline=None)
@given(
    lo=st.integers(-(2**13), 2**13),
    width=st.integers(0, 2**14),
    threshold=st.integers(1, 10),
)
def test_lsbs_for_threshold_is_the_fewest_that_fit(lo, width, threshold):
    """Every rounded accumulator of ``lo..hi``, stored above the aligned base, fits
    ``threshold`` bits once the removed bits are gone; one bit fewer does not fit."""
    hi = lo + width
    lsbs = lsbs_for_threshold(np.array([lo]), np.array([hi]), threshold)
    accumulators = np.arange(lo, hi + 1)
    stored = round_accumulator(accumulators, lsbs) - aligned_base(lo, lsbs)
    assert stored.min() >= 0
    assert np.all(stored % (1 << lsbs) == 0)
    assert bits_for(stored.max() >> lsbs) <= threshold
    if lsbs:
        fewer = lsbs - 1
        stored = round_accumulator(accumulators, fewer) - aligned_base(lo, fewer)
        assert bits_for(stored.max() >> fewer) > threshold


@given(n_bits=st.integers(2, 12), threshold=st.integers(1, 10))
def test_carry_free_limit_is_the_widest_range_without_the_extra_bit(n_bits, threshold):
    """Within ±limit, a layer rounds away no more bits than a full ``n_bits`` range needs
    before the carry (``bits − threshold``), so its lookup reads ``threshold`` bits at that
    rounding; one more and it would round away more. A range that needs no rounding keeps
    its limit."""
    full = 2 ** (n_bits - 1) - 1
    limit = carry_free_limit(full, threshold)
    before_carry = max(bits_for(2 * full) - threshold, 0)
    assert 0 <= limit <= full  # 0: not one value fits (2 bits to 1), the network refuses
    assert lsbs_for_threshold(np.array([-limit]), np.array([limit]), threshold) <= before_carry
    if limit < full:
        wider = np.array([-(limit + 1)]), np.array([limit + 1])
        assert lsbs_for_threshold(*wider, threshold) > before_carry
    if n_bits <= threshold:
        assert limit == full


def test_rounding_is_half_up_to_multiples_whatever_the_sign():
    accumulators = np.array([-6, -5, -3, -2, -1, 0, 1, 2, 5, 6])
    assert round_accumulator(accumulators, 2).tolist() == [-4, -4, -4, 0, 0, 0, 0, 4, 4, 8]
    assert aligned_base(np.array([-5, -4, 3]), 2).tolist() == [-8, -4, 0]


@pytest.mark.parametrize("lsbs", [0, 1, 3, 7])
def test_float_accumulators_round_as_integers_do(lsbs):
    """The training forward's float32 accumulators round exactly as the integer model's."""
    accumulators = torch.arange(-(2**15), 2**15, 7, dtype=torch.int64)
    as_float = round_accumulator(accumulators.to(torch.float32), lsbs)
    assert as_float.dtype == torch.float32
    assert torch.equal(as_float.to(torch.int64), round_accumulator(accumulators, lsbs))


def test_rounding_headroom_takes_one_more_bit():
    # 255 rounded to multiples of 4 is 256: 9 bits, a 7-bit lookup; dropping 3 bits gives 6
    assert lsbs_for_threshold(0, 255, 6) == 3
    assert lsbs_for_threshold(0, 200, 6) == 2  # 200 → 200: 8 bits − 2 = 6
    assert lsbs_for_threshold(0, 40, 6) == 0
    # the widest neuron decides; an unaligned minimum widens the stored range
    assert lookup_precision(np.array([0, 0]), np.array([40, 200]), 2) == 6
    assert lookup_precision(np.array([-3]), np.array([252]), 2) == 7  # stored from -4 to 252


def test_auto_lsbs_from_the_narrowest_step():
    values = np.arange(256)
    staircase = np.clip(values // 16, 0, 7)[None]  # steps 16 wide
    assert auto_lsbs(staircase, np.array([255]), margin=1) == 3
    assert auto_lsbs(staircase, np.array([255]), margin=0) == 4
    narrow = np.clip((values - 100) // 4, 0, 3)[None]  # steps 4 wide
    both = np.concatenate([staircase, narrow])
    assert auto_lsbs(both, np.array([255, 255]), margin=1) == 1
    # constant or single-threshold neurons say nothing: keep full precision
    assert auto_lsbs((values[None] > 50).astype(int), np.array([255]), margin=1) == 0


def test_cheapest_lsbs_trades_rounding_bits_for_lookup_precision():
    # a 7-bit accumulator: 3 removed bits and a 4-bit lookup beat both extremes
    assert cheapest_lsbs(0, 120, 7) == 3
    assert cheapest_lsbs(0, 120, 1) == 1  # capped by what accuracy allows
    assert cheapest_lsbs(0, 120, 0) == 0
    # 127 rounds up to 128 unless 4 bits go: a 1-bit rounding would buy nothing
    assert cheapest_lsbs(0, 127, 1) == 0
    assert cheapest_lsbs(0, 127, 7) == 4
    assert cheapest_lsbs(0, 5, 2) == 0  # a 3-bit lookup is already cheap


@pytest.mark.parametrize("value", [0, -1, 2.5, "six", True])
def test_invalid_rounding_threshold_bits(value):
    with pytest.raises(ValueError, match="rounding_threshold_bits"):
        check_rounding_threshold_bits(value)


def _model(mlp):
    torch.manual_seed(0)
    return mlp(
        torch.nn.Linear(4, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    )


@pytest.mark.parametrize("threshold", [6, 5, 4, 3])
def test_lookup_precision_equals_threshold(threshold, mlp, make_inputset):
    """Every rounded lookup runs at exactly the threshold, never one bit above."""
    inputset = make_inputset(200)
    module = build_torch_model(_model(mlp), inputset, n_bits=5, rounding_threshold_bits=threshold)
    rounded = [r for r in module.bitwidth_report() if r["lsbs_to_remove"]]
    assert rounded
    assert all(r["pbs_precision"] == threshold for r in rounded)


def test_auto_rounding_equals_clear_in_simulation(mlp, make_inputset, stress_inputs):
    inputset = make_inputset(200)
    model = _model(mlp)
    module = build_torch_model(model, inputset, n_bits=5, rounding_threshold_bits="auto")
    exact = build_torch_model(model, inputset, n_bits=5, rounding_threshold_bits=None)
    reports = module.bitwidth_report()
    assert any(r["lsbs_to_remove"] > 0 for r in reports)
    # never wider than without rounding
    for rounded, full in zip(reports, exact.bitwidth_report()):
        if full["pbs_precision"] is not None:
            assert rounded["pbs_precision"] <= full["pbs_precision"]
    module.compile(inputset)
    q = module.quantize_input(stress_inputs(inputset, 300))
    clear = module.quantized_forward(q)
    simulated = module.quantized_forward(q, fhe="simulate")
    np.testing.assert_array_equal(simulated, clear)


def test_rounding_plan_is_read_layer_by_layer():
    plan = RoundingPlan((2, 0))
    assert [plan.for_layer(i) for i in range(2)] == [2, 0]
    with pytest.raises(ValueError, match="has 2 layers; the graph has more"):
        plan.for_layer(2)
    with pytest.raises(ValueError, match=">= 0 bits"):
        RoundingPlan((1, -1))
