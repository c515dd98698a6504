"""Rounding before lookups: the kept precision is exactly the threshold, "auto" picks the bits
from the tables, and clear == simulation either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnn_sklearn.quantization.builder import (
    auto_lsbs,
    bits_for,
    cheapest_lsbs,
    check_rounding_threshold_bits,
    lsbs_for_threshold,
    rounded_max,
)
from qnn_sklearn.torch import build_torch_model


@settings(max_examples=300, deadline=None)
@given(span_max=st.integers(0, 2**14), threshold=st.integers(1, 10))
def test_lsbs_for_threshold_is_the_fewest_that_fit(span_max, threshold):
    lsbs = lsbs_for_threshold(span_max, threshold)
    assert bits_for(rounded_max(span_max, lsbs)) - lsbs <= threshold
    if lsbs:
        fewer = lsbs - 1
        assert bits_for(rounded_max(span_max, fewer)) - fewer > threshold
    # rounding itself agrees with round half up
    values = np.arange(span_max + 1)
    unit = 1 << lsbs
    assert ((values + unit // 2) // unit * unit).max() == rounded_max(span_max, lsbs)


def test_rounding_headroom_takes_one_more_bit():
    # 255 rounded to multiples of 4 is 256: 9 bits, a 7-bit lookup; dropping 3 bits gives 6
    assert lsbs_for_threshold(255, 6) == 3
    assert lsbs_for_threshold(200, 6) == 2  # 200 → 200: 8 bits − 2 = 6
    assert lsbs_for_threshold(40, 6) == 0


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
    assert cheapest_lsbs(120, 7) == 3
    assert cheapest_lsbs(120, 1) == 1  # capped by what accuracy allows
    assert cheapest_lsbs(120, 0) == 0
    # 127 rounds up to 128 unless 4 bits go: a 1-bit rounding would buy nothing
    assert cheapest_lsbs(127, 1) == 0
    assert cheapest_lsbs(127, 7) == 4
    assert cheapest_lsbs(5, 2) == 0  # a 3-bit lookup is already cheap


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
