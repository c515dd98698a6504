"""Property tests of QuantizationOptions, UniformQuantizer and QuantizedArray.

An n-bit grid holds the integers qmin..qmax: 0..2^n − 1 unsigned, −2^(n−1)..2^(n−1) − 1 signed,
one value fewer when narrow (the lowest when signed, the highest when unsigned).
``quantization/grid.py`` computes it for every caller (ARCHITECTURE.md, "One place for each
fact")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qnn_sklearn.quantization import QuantizationOptions, QuantizedArray, UniformQuantizer

SETTINGS = settings(deadline=None, max_examples=60)

finite_floats = st.floats(
    min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
float_arrays = hnp.arrays(np.float64, st.integers(1, 40), elements=finite_floats)


@st.composite
def grid_options(draw, symmetric=None):
    """Any usable grid. With 1 bit, a narrow unsigned grid is {0} and a signed symmetric or
    narrow one has no positive integer, so those start at 2 bits."""
    is_signed = draw(st.booleans())
    is_symmetric = draw(st.booleans()) if symmetric is None else symmetric
    is_narrow = draw(st.booleans())
    min_bits = 2 if is_narrow or (is_signed and is_symmetric) else 1
    n_bits = draw(st.integers(min_bits, 12))
    return QuantizationOptions(n_bits, is_signed, is_symmetric, is_narrow)


def _array(options: QuantizationOptions, values: np.ndarray, **kwargs) -> QuantizedArray:
    """A QuantizedArray on the grid of ``options``: its bits, sign and narrowness."""
    return QuantizedArray(
        options.n_bits, values, is_signed=options.is_signed, is_narrow=options.is_narrow, **kwargs
    )


def _calibration_range(values: np.ndarray) -> tuple[float, float]:
    """The float interval a calibrated grid must cover: the values and 0."""
    return min(values.min(), 0.0), max(values.max(), 0.0)


# -- QuantizationOptions -----------------------------------------------------------------------


@given(n_bits=st.integers(1, 24), is_signed=st.booleans(), is_narrow=st.booleans())
@SETTINGS
def test_grid_bounds_follow_design(n_bits, is_signed, is_narrow):
    assume(not (is_narrow and n_bits < 2))  # a one-value grid is rejected (tested below)
    options = QuantizationOptions(n_bits, is_signed=is_signed, is_narrow=is_narrow)
    if is_signed:
        assert options.qmin == -(2 ** (n_bits - 1)) + int(is_narrow)
        assert options.qmax == 2 ** (n_bits - 1) - 1
    else:
        assert options.qmin == 0
        assert options.qmax == 2**n_bits - 1 - int(is_narrow)
    # A narrow grid drops exactly one value; a signed narrow grid is symmetric around 0.
    assert options.qmax - options.qmin + 1 == 2**n_bits - int(is_narrow)
    if is_signed and is_narrow:
        assert options.qmin == -options.qmax


@pytest.mark.parametrize(
    ("n_bits", "kwargs", "match"),
    [
        (0, {}, "n_bits must be at least 1"),
        (-3, {"is_signed": True}, "n_bits must be at least 1"),
        (2.5, {}, "n_bits must be an integer"),
        ("8", {}, "n_bits must be an integer"),
        (True, {}, "n_bits must be an integer"),
        (1, {"is_signed": True, "is_narrow": True}, "no step to quantize"),
    ],
)
def test_invalid_grids_are_rejected(n_bits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizationOptions(n_bits, **kwargs)


@pytest.mark.parametrize(
    "grid",
    [
        {"is_signed": True, "is_symmetric": True},  # {-1, 0}: scale = bound / qmax = bound / 0
        {"is_signed": False, "is_narrow": True},  # {0}: scale = range / (qmax - qmin) = range / 0
        {"is_signed": False, "is_narrow": True, "is_symmetric": True},  # {0}: vmax / 0
    ],
)
def test_degenerate_one_bit_grids_are_rejected_with_a_value_error(grid):
    """These 1-bit grids cannot hold a positive step, so calibrating them divides by zero.
    They must be refused with a ValueError naming n_bits, either when the grid is made or,
    at the latest, when a quantizer is calibrated on it (not a ZeroDivisionError)."""
    with pytest.raises(ValueError, match="n_bits"):
        options = QuantizationOptions(1, **grid)
        UniformQuantizer.from_values(options, np.array([-1.0, 0.5, 1.0]))


# -- UniformQuantizer --------------------------------------------------------------------------


@given(options=grid_options(), values=float_arrays)
@SETTINGS
def test_round_trip_within_half_a_step_inside_the_range(options, values):
    quantizer = UniformQuantizer.from_values(options, values)
    lo, hi = _calibration_range(values)
    if options.is_symmetric:
        # A symmetric grid covers [-bound, bound] (signed) or [0, vmax] (unsigned).
        bound = max(abs(lo), abs(hi))
        lo, hi = (-bound, bound) if options.is_signed else (0.0, hi)
    inside = values[(values >= lo) & (values <= hi)]
    q = quantizer.quant(inside)
    error = np.abs(quantizer.dequant(q) - inside)
    assert np.all(error <= quantizer.scale / 2 * (1 + 1e-9) + 1e-12 * max(1.0, abs(lo), hi))
    assert q.dtype == np.int64


@given(options=grid_options(), values=float_arrays)
@SETTINGS
def test_zero_is_exact_after_calibration(options, values):
    """0 is always in the calibrated range and on the grid (Jacob et al. 2018)."""
    quantizer = UniformQuantizer.from_values(options, values)
    assert options.qmin <= quantizer.zero_point <= options.qmax
    assert quantizer.dequant(quantizer.quant(np.zeros(3))).tolist() == [0.0, 0.0, 0.0]


@given(options=grid_options(), values=float_arrays, factor=st.floats(1.01, 1e4))
@SETTINGS
def test_values_outside_the_range_are_clipped(options, values, factor):
    quantizer = UniformQuantizer.from_values(options, values)
    top = quantizer.dequant(options.qmax)
    bottom = quantizer.dequant(options.qmin)
    far = factor * (abs(top) + abs(bottom) + quantizer.scale)
    with np.errstate(over="ignore"):  # 1e300 / scale may overflow to inf, which clips too
        assert quantizer.quant(np.array([far, 1e300])).tolist() == [options.qmax] * 2
        assert quantizer.quant(np.array([-far, -1e300])).tolist() == [options.qmin] * 2
    # Clipping keeps everything on the grid, including the values themselves.
    q = quantizer.quant(values * factor)
    assert q.min() >= options.qmin and q.max() <= options.qmax


@given(options=grid_options(), values=float_arrays)
@SETTINGS
def test_quant_is_monotone_and_idempotent_on_the_grid(options, values):
    quantizer = UniformQuantizer.from_values(options, values)
    q_sorted = quantizer.quant(np.sort(values))
    assert np.all(np.diff(q_sorted) >= 0)
    grid = np.arange(options.qmin, options.qmax + 1)
    assert np.array_equal(quantizer.quant(quantizer.dequant(grid)), grid)


@given(options=grid_options(symmetric=True), values=float_arrays)
@SETTINGS
def test_symmetric_means_zero_point_zero(options, values):
    quantizer = UniformQuantizer.from_values(options, values)
    assert quantizer.zero_point == 0
    array = _array(options, values, is_symmetric=True)
    assert array.zero_point == 0
    if options.is_signed:
        # the largest magnitude lands on +-qmax, no integer is wasted on one side
        assert np.abs(array.quant()).max() == options.qmax or np.all(values == 0)


@given(n_bits=st.integers(2, 10), zero_point=st.integers(-3, 3).filter(bool))
@SETTINGS
def test_symmetric_quantizer_refuses_a_zero_point(n_bits, zero_point):
    options = QuantizationOptions(n_bits, is_signed=True, is_symmetric=True)
    with pytest.raises(ValueError, match="zero_point 0"):
        UniformQuantizer(options, 0.5, zero_point)


@given(n_bits=st.integers(2, 12), is_signed=st.booleans(), values=float_arrays)
@SETTINGS
def test_narrow_grids_never_emit_the_dropped_integer(n_bits, is_signed, values):
    options = QuantizationOptions(n_bits, is_signed=is_signed, is_narrow=True)
    quantizer = UniformQuantizer.from_values(options, values)
    q = quantizer.quant(np.concatenate([values, [-1e9, 1e9]]))
    assert q.min() == options.qmin and q.max() == options.qmax
    if is_signed:
        assert q.min() == -(2 ** (n_bits - 1)) + 1
    else:
        assert q.max() == 2**n_bits - 2


@pytest.mark.parametrize("scale", [0.0, -1.0, np.inf, np.nan])
def test_quantizer_scale_must_be_finite_and_positive(scale):
    with pytest.raises(ValueError, match="finite and positive"):
        UniformQuantizer(QuantizationOptions(4), scale)


@pytest.mark.parametrize("values", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf])])
def test_calibration_needs_finite_values(values):
    with pytest.raises(ValueError, match="non-empty array of finite floats"):
        UniformQuantizer.from_values(QuantizationOptions(4), values)


# -- QuantizedArray ----------------------------------------------------------------------------


@st.composite
def wrapped_integers(draw):
    options = draw(grid_options(symmetric=False))
    qvalues = draw(
        hnp.arrays(
            np.int64,
            hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
            elements=st.integers(options.qmin, options.qmax),
        )
    )
    scale = draw(st.floats(1e-4, 1e3, allow_nan=False, allow_infinity=False))
    zero_point = draw(st.integers(options.qmin, options.qmax))
    return options, qvalues, scale, zero_point


@given(case=wrapped_integers())
@SETTINGS
def test_wrapping_integers_gives_their_floats_back(case):
    options, qvalues, scale, zero_point = case
    array = _array(options, qvalues, value_is_float=False, scale=scale, zero_point=zero_point)
    assert array.scale == scale and array.zero_point == zero_point
    assert np.array_equal(array.quant(), qvalues)
    expected = scale * (qvalues.astype(np.float64) - zero_point)
    assert array.dequant().dtype == np.float64
    assert array.dequant().shape == qvalues.shape
    np.testing.assert_allclose(array.dequant(), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(array.values, expected, rtol=1e-12, atol=0)
    # and quantizing those floats again gives the same integers
    assert np.array_equal(array.quantizer.quant(array.dequant()), qvalues)


@given(case=wrapped_integers(), offset=st.integers(1, 50))
@SETTINGS
def test_wrapping_integers_outside_the_grid_fails(case, offset):
    options, qvalues, scale, zero_point = case
    bad = qvalues.copy()
    bad.flat[0] = options.qmax + offset
    with pytest.raises(ValueError, match="outside the .*grid"):
        _array(options, bad, value_is_float=False, scale=scale, zero_point=zero_point)


def test_wrapping_integers_needs_a_scale():
    with pytest.raises(ValueError, match="explicit scale and zero_point"):
        QuantizedArray(4, np.array([1, 2, 3]), value_is_float=False)


@given(options=grid_options(), values=float_arrays, new_values=float_arrays)
@SETTINGS
def test_update_values_keeps_the_quantizer(options, values, new_values):
    array = _array(options, values, is_symmetric=options.is_symmetric)
    quantizer, scale, zero_point = array.quantizer, array.scale, array.zero_point
    expected_q = quantizer.quant(new_values)
    returned = array.update_values(new_values)
    assert array.quantizer is quantizer
    assert (array.scale, array.zero_point) == (scale, zero_point)
    assert np.array_equal(returned, expected_q)
    assert np.array_equal(array.quant(), expected_q)
    np.testing.assert_array_equal(array.values, new_values)
    # wrapping integers through update_values also keeps it
    grid = np.arange(options.qmin, options.qmax + 1)[:7]
    array.update_values(grid, value_is_float=False)
    assert array.quantizer is quantizer
    np.testing.assert_allclose(array.dequant(), scale * (grid - zero_point))


@given(options=grid_options(), values=float_arrays)
@SETTINGS
def test_quantized_array_matches_its_calibrated_quantizer(options, values):
    array = _array(options, values, is_symmetric=options.is_symmetric)
    reference = UniformQuantizer.from_values(options, values)
    assert array.n_bits == options.n_bits
    assert (array.scale, array.zero_point) == (reference.scale, reference.zero_point)
    assert np.array_equal(array.quant(), reference.quant(values))
    np.testing.assert_allclose(array.dequant(), reference.dequant(reference.quant(values)))
