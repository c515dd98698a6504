"""Each CNN / residual op through the builder: its integers equal a numpy or torch reference
computed on the input's integers (exactness), and its certified range holds on every input
and is reached (bound). The input is an encrypted tensor straight from an input quantizer, so
every expected value is computed from the grid and the op's attributes alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qnn_sklearn.quantization import ONNX_OPS_TO_QUANTIZED_IMPL as OPS
from qnn_sklearn.quantization import PostTrainingOptions, QuantizationOptions, UniformQuantizer
from qnn_sklearn.quantization.builder import ModuleBuilder
from qnn_sklearn.quantization.program import LinearStep, LookupStep, run_program
from qnn_sklearn.quantization.stages import Select, stage_from_json
from qnn_sklearn.quantization.values import ClearInput, Constant, QuantizedConstant

SETTINGS = settings(deadline=None, max_examples=15)
SCALE = 0.25


class Harness:
    """A builder whose input is a signed ``n_bits`` grid of step SCALE over ``shape``."""

    def __init__(self, shape, n_bits=3, zero_point=0, post_training=None):
        self.builder = ModuleBuilder(post_training)
        options = QuantizationOptions(n_bits, is_signed=True)
        self.grid = options.grid
        self.zero_point = zero_point
        self.x = self.builder.quantize_input(
            ClearInput(tuple(shape)), UniformQuantizer(options, SCALE, zero_point)
        )

    def apply(self, op_type, inputs, attributes=None, names=None):
        op = OPS[op_type](attributes or {})
        names = names or [f"t{i}" for i in range(len(inputs))]
        return op.apply(self.builder, inputs, names, op_type)

    def integers(self, value, q):
        """What ``value`` holds on input grid integers ``q``: stored plus offset."""
        stored = run_program(self.builder.steps, q - self.grid.qmin)
        return stored + value.grid.offset

    def random_inputs(self, n, seed=0):
        rng = np.random.default_rng(seed)
        shape = (n, *self.x.feature_shape)
        q = rng.integers(self.grid.qmin, self.grid.qmax + 1, size=shape)
        extremes = np.stack(
            [np.full(shape[1:], self.grid.qmin), np.full(shape[1:], self.grid.qmax)]
        )
        return np.concatenate([q, extremes])


def assert_within_certified(harness, value, q):
    """Every stored integer lies in [0, span]: the bound the circuit is sized from."""
    stored = run_program(harness.builder.steps, q - harness.grid.qmin)
    assert stored.min() >= 0 and np.all(stored <= value.span)


def assert_linear_bounds_are_reached(harness):
    """The last LinearStep's certified ends are reached by inputs following each row's signs."""
    step = harness.builder.steps[-1]
    report = harness.builder.layers[-1]
    weight = step.weight_t.T
    lo, hi = harness.grid.qmin - harness.zero_point, harness.grid.qmax - harness.zero_point
    top = np.where(weight > 0, hi, lo) + harness.zero_point
    bottom = np.where(weight > 0, lo, hi) + harness.zero_point
    q = np.concatenate([top, bottom]).reshape(-1, *harness.x.feature_shape)
    stored = run_program(harness.builder.steps, q - harness.grid.qmin)
    acc = stored.reshape(len(q), -1) + report.accumulator_min
    rows = np.arange(len(weight))
    np.testing.assert_array_equal(acc[rows, rows], report.accumulator_max)
    np.testing.assert_array_equal(acc[len(weight) + rows, rows], report.accumulator_min)


@given(
    groups=st.integers(1, 2),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    pad=st.integers(0, 1),
    dilation=st.integers(1, 2),
    one_d=st.booleans(),
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_conv_is_exact_and_its_bounds_are_reached(
    groups, kernel, stride, pad, dilation, one_d, seed
):
    spatial = (6,) if one_d else (5, 6)
    assume(dilation * (kernel - 1) + 1 <= min(spatial) + 2 * pad)
    rng = np.random.default_rng(seed)
    c_in, c_out = 2 * groups, 2 * groups
    weight = rng.integers(-3, 4, size=(c_out, 2, *(kernel,) * len(spatial)))
    n = len(spatial)
    h = Harness((c_in, *spatial), zero_point=int(rng.integers(-1, 2)))
    attributes = {
        "group": groups,
        "strides": (stride,) * n,
        "pads": (pad,) * 2 * n,
        "dilations": (dilation,) * n,
    }
    w = QuantizedConstant(weight, np.asarray(0.5), np.asarray(0))
    out = h.apply("Conv", [h.x, w], attributes)
    q = h.random_inputs(20, seed)
    conv = torch.nn.functional.conv1d if one_d else torch.nn.functional.conv2d
    reference = conv(
        torch.tensor(q - h.zero_point, dtype=torch.float64),
        torch.tensor(weight, dtype=torch.float64),
        None,
        stride,
        pad,
        dilation,
        groups,
    ).numpy()
    np.testing.assert_array_equal(h.integers(out, q), reference.astype(np.int64))
    assert out.grid.scale == SCALE * 0.5  # no bias, one weight scale: integers on a grid
    assert_within_certified(h, out, q)
    assert_linear_bounds_are_reached(h)


def test_conv_bias_and_channel_scales_ride_on_the_float_view():
    rng = np.random.default_rng(1)
    h = Harness((2, 4, 4))
    weight = rng.integers(-3, 4, size=(3, 2, 3, 3))
    channel_scale = np.array([0.5, 0.25, 1.0]).reshape(3, 1, 1, 1)
    bias = np.array([0.1, -0.2, 0.3])
    w = QuantizedConstant(weight, channel_scale, np.asarray(0))
    out = h.apply("Conv", [h.x, w, Constant(bias)], {"pads": (1, 1, 1, 1)})
    q = h.random_inputs(10)
    stored = run_program(h.builder.steps, q - h.grid.qmin)
    view = out.stages[0](stored)
    reference = torch.nn.functional.conv2d(
        torch.tensor(SCALE * q), torch.tensor(weight * channel_scale), torch.tensor(bias), padding=1
    ).numpy()
    np.testing.assert_allclose(view, reference, rtol=1e-12, atol=1e-12)
    assert out.grid is None  # a float bias: a lookup must come before the next linear layer


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_sums_exactly_and_divides_in_the_view(count_include_pad):
    h = Harness((2, 5, 5))
    attributes = {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}
    attributes["count_include_pad"] = count_include_pad
    out = h.apply("AveragePool", [h.x], attributes)
    q = h.random_inputs(10)
    stored = run_program(h.builder.steps, q - h.grid.qmin)
    reference = torch.nn.functional.avg_pool2d(
        torch.tensor(SCALE * q, dtype=torch.float64),
        3,
        2,
        1,
        count_include_pad=bool(count_include_pad),
    ).numpy()
    np.testing.assert_allclose(out.stages[0](stored), reference, rtol=1e-12, atol=1e-12)
    # one divisor everywhere: integers on a grid of step SCALE / 9
    assert (out.grid is not None) == bool(count_include_pad)
    assert_within_certified(h, out, q)
    assert_linear_bounds_are_reached(h)


def test_global_average_pool_is_each_channels_mean():
    h = Harness((3, 4, 2))
    out = h.apply("GlobalAveragePool", [h.x])
    q = h.random_inputs(10)
    np.testing.assert_array_equal(h.integers(out, q), q.sum(axis=(2, 3), keepdims=True))
    assert out.grid.scale == SCALE / 8 and out.feature_shape == (3, 1, 1)
    assert_linear_bounds_are_reached(h)


@given(
    kernel=st.integers(2, 3),
    stride=st.integers(1, 3),
    pad=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_max_pool_is_exact_counts_its_lookups_and_reaches_its_bound(kernel, stride, pad, seed):
    assume(pad <= kernel // 2)
    h = Harness((2, 5, 5), zero_point=1)
    attributes = {"kernel_shape": (kernel, kernel), "strides": (stride, stride)}
    attributes["pads"] = (pad,) * 4
    out = h.apply("MaxPool", [h.x], attributes)
    q = h.random_inputs(20, seed)
    reference = torch.nn.functional.max_pool2d(
        torch.tensor(q - h.zero_point, dtype=torch.float64), kernel, stride, pad
    ).numpy()
    np.testing.assert_array_equal(h.integers(out, q), reference.astype(np.int64))
    (report,) = h.builder.layers
    lookups = [s for s in h.builder.steps if isinstance(s, LookupStep)]
    assert report.pbs_count == sum(s.tables.shape[0] for s in lookups)
    assert report.pbs_count == report.n_neurons * (kernel * kernel - 1)  # k − 1 per output
    assert_within_certified(h, out, q)
    # the certified upper end is the grid's largest level, reached by the all-qmax row
    top = h.integers(out, q[-1:])
    assert top.max() == (out.grid.offset + out.span).max() == h.grid.qmax - h.zero_point


def test_pad_copies_and_adds_a_grid_level():
    h = Harness((2, 3, 3))
    pads = Constant(np.array([0, 0, 1, 2, 0, 0, 2, 0]))
    out = h.apply("Pad", [h.x, pads, Constant(np.array(2 * SCALE))])
    q = h.random_inputs(5)
    reference = np.pad(q, ((0, 0), (0, 0), (1, 2), (2, 0)), constant_values=2)
    np.testing.assert_array_equal(h.integers(out, q), reference)
    assert_linear_bounds_are_reached(h)
    with pytest.raises(ValueError, match="not a level of the input's grid"):
        Harness((2, 3, 3)).apply("Pad", [h.x, pads, Constant(np.array(0.3 * SCALE))])


def test_pad_refuses_huge_or_batch_pads():
    h = Harness((2, 3, 3))
    for pads in ([0, 0, 10**6, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]):
        with pytest.raises(ValueError, match="pads"):
            h.apply("Pad", [h.x, Constant(np.array(pads))])


def test_transpose_and_concat_move_integers_without_arithmetic():
    h = Harness((2, 3, 3))
    t = h.apply("Transpose", [h.x], {"perm": (0, 1, 3, 2)})
    both = h.apply("Concat", [h.x, t], {"axis": 1})
    q = h.random_inputs(5)
    reference = np.concatenate([q, q.transpose(0, 1, 3, 2)], axis=1)
    np.testing.assert_array_equal(h.integers(both, q), reference)
    assert not any(isinstance(s, (LinearStep, LookupStep)) for s in h.builder.steps)
    with pytest.raises(ValueError, match="batch axis"):
        h.apply("Transpose", [h.x], {"perm": (1, 0, 2, 3)})


@pytest.mark.parametrize("op_type, sign", [("Add", 1), ("Sub", -1)])
def test_residual_sum_is_exact_and_tight(op_type, sign):
    h = Harness((2, 3, 3), zero_point=-1)
    t = h.apply("Transpose", [h.x], {"perm": (0, 1, 3, 2)})
    out = h.apply(op_type, [h.x, t])
    q = h.random_inputs(30)
    centered = q - h.zero_point
    np.testing.assert_array_equal(h.integers(out, q), centered + sign * centered.swapaxes(2, 3))
    assert out.grid.scale == SCALE
    assert_within_certified(h, out, q)
    report = h.builder.layers[-1]
    lo, hi = h.grid.qmin - h.zero_point, h.grid.qmax - h.zero_point
    expected = (lo + sign * hi, hi + sign * lo) if sign < 0 else (2 * lo, 2 * hi)
    assert (report.accumulator_min.min(), report.accumulator_max.max()) == expected


def test_residual_sum_on_two_grids_needs_a_shared_quantizer_in_qat():
    h = Harness((4,))
    other = UniformQuantizer(QuantizationOptions(3, is_signed=True), 2 * SCALE, 0)
    coarse = h.builder.add_lookup(h.x, other, "requantize")
    with pytest.raises(ValueError, match="shared"):
        h.apply("Add", [h.x, coarse])


def test_batch_norm_after_conv_merges_into_its_rescale():
    h = Harness((2, 4, 4))
    weight = QuantizedConstant(
        np.ones((2, 2, 3, 3), dtype=np.int64), np.asarray(0.5), np.asarray(0)
    )
    conv = h.apply("Conv", [h.x, weight, Constant(np.array([0.1, 0.2]))])
    gain, bias, mean, var = (np.array(v) for v in ([2.0, 0.5], [0.1, -0.1], [0.3, 0.0], [4.0, 1.0]))
    bn = h.apply("BatchNormalization", [conv] + [Constant(v) for v in (gain, bias, mean, var)])
    assert len(bn.stages) == 1  # one affine: folded, no lookup of its own
    assert len(h.builder.steps) == 1
    q = h.random_inputs(5)
    stored = run_program(h.builder.steps, q - h.grid.qmin)
    module = torch.nn.BatchNorm2d(2, eps=1e-5).eval().double()
    for parameter, value in zip(
        (module.weight, module.bias, module.running_mean, module.running_var),
        (gain, bias, mean, var),
    ):
        parameter.data = torch.tensor(value)
    with torch.no_grad():
        reference = module(torch.tensor(conv.stages[0](stored))).numpy()
    np.testing.assert_allclose(bn.stages[0](stored), reference, rtol=1e-12, atol=1e-12)


def test_where_with_a_constant_condition_selects_in_the_view():
    h = Harness((4,))
    condition = Constant(np.array([1.0, 0.0, 1.0, 0.0]))
    out = h.apply("Where", [condition, h.x, Constant(np.array(0.5))])
    q = h.random_inputs(5)
    view = out.stages[-1](out.stages[0](q - h.grid.qmin))
    np.testing.assert_array_equal(view, np.where([1, 0, 1, 0], SCALE * q, 0.5))
    with pytest.raises(ValueError, match="constant condition"):
        h.apply("Where", [h.x, h.x, Constant(np.array(0.5))])


def test_post_training_residual_requantizes_the_finer_branch_onto_the_coarser_grid():
    """Post-training, an Add of tensors on grids of step SCALE and 2·SCALE re-quantizes the
    finer one by a lookup (no clipping: the lookup's grid holds all its values), then sums
    exactly on the coarser grid."""
    options = PostTrainingOptions(3, 3, 3, calibration={})
    h = Harness((4,), post_training=options)
    coarse_quantizer = UniformQuantizer(QuantizationOptions(3, is_signed=True), 2 * SCALE, 0)
    coarse = h.builder.add_lookup(h.x, coarse_quantizer, "coarse")
    out = h.apply("Add", [h.x, coarse])
    assert out.grid.scale == 2 * SCALE
    lookups = [s for s in h.builder.steps if isinstance(s, LookupStep)]
    assert len(lookups) == 2  # the coarse quantizer, then the fine branch's re-quantization
    q = h.random_inputs(30)
    rounded = np.rint(q / 2.0)  # the fine branch, in steps of 2·SCALE (half to even, np.rint)
    np.testing.assert_array_equal(h.integers(out, q), rounded + np.clip(np.rint(q / 2.0), -4, 3))
    assert_within_certified(h, out, q)


def test_select_stage_survives_json():
    stage = Select(np.array([True, False]), np.array(0.5), tensor_first=False)
    again = stage_from_json(json.loads(json.dumps(stage.to_json())))
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(again(x), np.where([True, False], 0.5, x))
