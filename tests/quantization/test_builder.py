"""The builder's certified accumulator bounds (``quantization/bounds.py``, see ARCHITECTURE.md) on
hand-built QONNX graphs with random integer weights.

The graphs are what a Brevitas export contains: ``Quant`` on the input, ``Quant`` on integer
weights, ``Gemm``, an activation, an activation ``Quant``, a second ``Gemm``. Every expected
value below is computed from the integer weights and the quantizers alone, independently of the
builder: the bound of neuron i over an input box ``[lo_j, hi_j]`` is
``Σ_j max(w_ij·lo_j, w_ij·hi_j)`` (and min), reached by the input that follows the signs of w_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qnn_sklearn.onnx import import_onnx
from qnn_sklearn.quantization import QuantizationOptions, QuantizedModule, UniformQuantizer
from qnn_sklearn.quantization.program import LinearStep, LookupStep

SETTINGS = settings(deadline=None, max_examples=40)
QONNX_DOMAIN = "qonnx.custom_op.general"
_erf = np.vectorize(math.erf)
ACTIVATIONS = {
    "Relu": lambda x: np.maximum(x, 0.0),
    "Tanh": np.tanh,
    # not monotone: their smallest value lies inside the accumulator range, not at an end
    "Gelu": lambda x: x * (1.0 + _erf(x / math.sqrt(2.0))) / 2.0,
    "HardSwish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
}


@dataclass
class Network:
    """Integer description of a two-layer QONNX MLP and the module built from it."""

    input_grid: QuantizationOptions
    input_scale: float
    input_zero_point: int
    w1: np.ndarray
    w1_scale: float
    b1: np.ndarray
    activation: str
    act_grid: QuantizationOptions
    act_scale: float
    w2: np.ndarray
    w2_scale: float
    module: QuantizedModule


def f32(value) -> np.ndarray:
    """What an ONNX float initializer holds (the builder reads these values)."""
    return np.asarray(value, dtype=np.float32).astype(np.float64)


def quant_node(inputs, output, grid: QuantizationOptions):
    return helper.make_node(
        "Quant",
        inputs,
        [output],
        domain=QONNX_DOMAIN,
        signed=int(grid.is_signed),
        narrow=int(grid.is_narrow),
        rounding_mode="ROUND",
    )


def qonnx_mlp(
    input_grid, input_scale, input_zero_point, w1, w1_scale, b1, activation, act_grid, act_scale,
    w2, w2_scale,
):  # fmt: skip
    """x → Quant → Gemm(Quant(W1)) → activation → Quant → Gemm(Quant(W2)) → y."""
    n_in = w1.shape[1]
    w_bits = max(int(np.abs(np.concatenate([w1.ravel(), w2.ravel()])).max()).bit_length() + 1, 2)
    w_grid = QuantizationOptions(w_bits, is_signed=True)
    tensors = {
        "in_scale": input_scale,
        "in_zp": float(input_zero_point),
        "in_bits": float(input_grid.n_bits),
        "w1": w1 * w1_scale,
        "w1_scale": w1_scale,
        "w2": w2 * w2_scale,
        "w2_scale": w2_scale,
        "zero": 0.0,
        "w_bits": float(w_bits),
        "b1": b1,
        "act_scale": act_scale,
        "act_bits": float(act_grid.n_bits),
    }
    initializers = [
        numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
        for name, value in tensors.items()
    ]
    nodes = [
        quant_node(["x", "in_scale", "in_zp", "in_bits"], "xq", input_grid),
        quant_node(["w1", "w1_scale", "zero", "w_bits"], "w1q", w_grid),
        helper.make_node("Gemm", ["xq", "w1q", "b1"], ["h1"], transB=1, name="gemm1"),
        helper.make_node(activation, ["h1"], ["a1"]),
        quant_node(["a1", "act_scale", "zero", "act_bits"], "a1q", act_grid),
        quant_node(["w2", "w2_scale", "zero", "w_bits"], "w2q", w_grid),
        helper.make_node("Gemm", ["a1q", "w2q"], ["y"], transB=1, name="gemm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w2.shape[0]])],
        initializers,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)],
    )


@st.composite
def grids(draw, min_bits=2, max_bits=4):
    is_signed = draw(st.booleans())
    return QuantizationOptions(
        draw(st.integers(min_bits, max_bits)), is_signed=is_signed, is_narrow=draw(st.booleans())
    )


def int_matrices(n_rows, n_cols, bits):
    limit = 2 ** (bits - 1)
    return st.lists(
        st.lists(st.integers(-limit + 1, limit - 1), min_size=n_cols, max_size=n_cols),
        min_size=n_rows,
        max_size=n_rows,
    ).map(lambda rows: np.array(rows, dtype=np.int64))


scales = st.floats(0.01, 2.0, allow_nan=False, allow_infinity=False)


@st.composite
def networks(draw):
    n_in, n_hidden, n_out = (
        draw(st.integers(1, 6)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 3)),
    )
    w_bits = draw(st.integers(2, 4))
    input_grid = draw(grids())
    input_zero_point = draw(st.integers(input_grid.qmin, input_grid.qmax))
    # power-of-two weight scales keep w * scale / scale exact in float32
    w1_scale, w2_scale = 2.0 ** draw(st.integers(-4, 2)), 2.0 ** draw(st.integers(-4, 2))
    w1 = draw(int_matrices(n_hidden, n_in, w_bits))
    w2 = draw(int_matrices(n_out, n_hidden, w_bits))
    b1 = np.array(draw(st.lists(st.floats(-2, 2), min_size=n_hidden, max_size=n_hidden)))
    activation = draw(st.sampled_from(sorted(ACTIVATIONS)))
    act_grid = draw(grids())
    input_scale, act_scale = draw(scales), draw(scales)
    model = qonnx_mlp(
        input_grid, input_scale, input_zero_point, w1, w1_scale, b1, activation, act_grid,
        act_scale, w2, w2_scale,
    )  # fmt: skip
    module = import_onnx(model)
    return Network(
        input_grid, f32(input_scale).item(), input_zero_point, w1, f32(w1_scale).item(), f32(b1),
        activation, act_grid, f32(act_scale).item(), w2, f32(w2_scale).item(), module,
    )  # fmt: skip


def interval_bounds(w: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Exact range of ``w @ v`` over the box ``lo <= v <= hi`` (per row of w)."""
    return np.minimum(w * lo, w * hi).sum(axis=1), np.maximum(w * lo, w * hi).sum(axis=1)


def sign_pattern_inputs(w: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Row 2i reaches the maximum of neuron i, row 2i+1 its minimum."""
    high = np.where(w > 0, hi, lo)
    low = np.where(w > 0, lo, hi)
    return np.stack([high, low], axis=1).reshape(-1, w.shape[1])


def adversarial_rows(w, lo, hi, rng, n_random=64):
    """Random rows of the box, its two constant corners, the sign patterns of every row of w,
    and the sign patterns of the negated weights."""
    n = w.shape[1]
    rows = [
        rng.integers(lo, hi + 1, size=(n_random, n)),
        np.broadcast_to(lo, (1, n)),
        np.broadcast_to(hi, (1, n)),
        sign_pattern_inputs(w, lo, hi),
        sign_pattern_inputs(-w, lo, hi),
    ]
    return np.concatenate(rows).astype(np.int64)


def linear_steps(module):
    return [step for step in module.layer_steps if isinstance(step, LinearStep)]


def first_layer_box(net: Network):
    """Range of ``q − zero_point`` for the input grid (what layer 1 multiplies)."""
    n_in = net.w1.shape[1]
    lo = np.full(n_in, net.input_grid.qmin - net.input_zero_point)
    hi = np.full(n_in, net.input_grid.qmax - net.input_zero_point)
    return lo, hi


def activation_integers(net: Network, accumulator: np.ndarray) -> np.ndarray:
    """The second layer's input integers, computed from the float semantics of the graph."""
    pre = net.input_scale * net.w1_scale * accumulator + net.b1
    quantizer = UniformQuantizer(net.act_grid, net.act_scale, 0)
    return quantizer.quant(ACTIVATIONS[net.activation](pre))


@given(net=networks())
@SETTINGS
def test_first_layer_bounds_are_the_exact_interval_bounds(net):
    report = net.module.layers[0]
    lo, hi = first_layer_box(net)
    expected_min, expected_max = interval_bounds(net.w1, lo, hi)
    np.testing.assert_array_equal(report.accumulator_min, expected_min)
    np.testing.assert_array_equal(report.accumulator_max, expected_max)
    assert report.n_neurons == net.w1.shape[0]
    span = int((expected_max - expected_min).max())
    # the circuit holds acc − acc_min, so the bit width is the one of the widest span, no more
    assert report.certified_bits == max(span.bit_length(), 1)
    summary = net.module.bitwidth_report()[0]
    assert summary["certified_range"] == (int(expected_min.min()), int(expected_max.max()))
    assert summary["certified_bits"] == report.certified_bits
    assert summary["neurons"] == net.w1.shape[0]


@given(net=networks(), seed=st.integers(0, 2**32 - 1))
@SETTINGS
def test_first_layer_accumulators_stay_inside_and_reach_the_bounds(net, seed):
    report = net.module.layers[0]
    step = net.module.layer_steps[0]
    assert isinstance(step, LinearStep)
    lo, hi = first_layer_box(net)
    centered = adversarial_rows(net.w1, lo, hi, np.random.default_rng(seed))
    q = centered + net.input_zero_point
    # what the circuit receives for those integers: q − qmin
    stored = step(q - net.input_grid.qmin)
    assert stored.min() >= 0 and stored.max() < 2**step.bit_width
    accumulator = stored + report.accumulator_min
    np.testing.assert_array_equal(accumulator, centered @ net.w1.T)
    assert np.all(accumulator >= report.accumulator_min)
    assert np.all(accumulator <= report.accumulator_max)
    # tightness: the sign pattern of row i reaches the max and min of neuron i exactly
    n_random = len(centered) - 2 - 4 * net.w1.shape[0]
    patterns = accumulator[n_random + 2 : n_random + 2 + 2 * net.w1.shape[0]]
    neurons = np.arange(net.w1.shape[0])
    np.testing.assert_array_equal(patterns[0::2][neurons, neurons], report.accumulator_max)
    np.testing.assert_array_equal(patterns[1::2][neurons, neurons], report.accumulator_min)


@given(net=networks(), seed=st.integers(0, 2**32 - 1))
@SETTINGS
def test_float_inputs_far_outside_reach_the_first_layer_bounds(net, seed):
    """Through quantize_input: huge floats of the sign of the weights hit the bounds."""
    module = net.module
    report = module.layers[0]
    signs = np.where(net.w1 > 0, 1.0, -1.0)
    far = 1e6 * np.stack([signs, -signs], axis=1).reshape(-1, net.w1.shape[1])
    rng = np.random.default_rng(seed)
    noise = rng.normal(scale=rng.uniform(0.1, 1e4), size=(32, net.w1.shape[1]))
    q = module.quantize_input(np.concatenate([far, noise]))
    assert q.min() >= 0 and q.max() <= net.input_grid.qmax - net.input_grid.qmin
    accumulator = module.layer_steps[0](q) + report.accumulator_min
    assert np.all(accumulator >= report.accumulator_min)
    assert np.all(accumulator <= report.accumulator_max)
    neurons = np.arange(net.w1.shape[0])
    pattern_rows = accumulator[: len(far)]
    np.testing.assert_array_equal(pattern_rows[0::2][neurons, neurons], report.accumulator_max)
    np.testing.assert_array_equal(pattern_rows[1::2][neurons, neurons], report.accumulator_min)


def activation_box(net: Network, first) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest activation integer of each hidden neuron over every accumulator
    of its certified range (brute force: the activation need not be monotone)."""
    offsets = np.arange(int((first.accumulator_max - first.accumulator_min).max()) + 1)
    accumulators = np.minimum(first.accumulator_min + offsets[:, None], first.accumulator_max)
    integers = activation_integers(net, accumulators)
    return integers.min(axis=0), integers.max(axis=0)


@given(net=networks())
@SETTINGS
def test_second_layer_bounds_are_the_interval_bounds_of_the_reachable_activations(net):
    """Layer 2's input box is the range of the activation integers over layer 1's certified
    accumulator range."""
    first, second = net.module.layers
    act_lo, act_hi = activation_box(net, first)
    expected_min, expected_max = interval_bounds(net.w2, act_lo, act_hi)
    np.testing.assert_array_equal(second.accumulator_min, expected_min)
    np.testing.assert_array_equal(second.accumulator_max, expected_max)
    assert second.certified_bits == max(int((expected_max - expected_min).max()).bit_length(), 1)
    assert first.pbs_count == net.w1.shape[0] and second.pbs_count == 0


@given(net=networks(), seed=st.integers(0, 2**32 - 1))
@SETTINGS
def test_second_layer_accumulators_stay_inside_and_reach_the_bounds(net, seed):
    module = net.module
    first, second = module.layers
    linear1, lookup, linear2 = module.layer_steps
    assert isinstance(lookup, LookupStep) and isinstance(linear2, LinearStep)
    # every accumulator the whole program reaches from adversarial first-layer inputs
    lo, hi = first_layer_box(net)
    centered = adversarial_rows(net.w1, lo, hi, np.random.default_rng(seed))
    stored_in = centered + net.input_zero_point - net.input_grid.qmin
    act_stored = lookup(linear1(stored_in))
    accumulator = linear2(act_stored) + second.accumulator_min
    assert np.all(accumulator >= second.accumulator_min)
    assert np.all(accumulator <= second.accumulator_max)
    assert linear2(act_stored).max() < 2**linear2.bit_width
    # the lookup computes the activation integers of the float graph (shifted to be >= 0)
    act_q = activation_integers(net, centered @ net.w1.T)
    act_base, act_top = activation_box(net, first)
    np.testing.assert_array_equal(act_stored, act_q - act_base)
    np.testing.assert_array_equal(accumulator, act_q @ net.w2.T)
    # tightness over layer 2's own input box: sign patterns of w2 reach its bounds exactly
    act_span = act_top - act_base
    patterns = sign_pattern_inputs(net.w2, np.zeros_like(act_span), act_span)
    reached = linear2(patterns) + second.accumulator_min
    neurons = np.arange(net.w2.shape[0])
    np.testing.assert_array_equal(reached[0::2][neurons, neurons], second.accumulator_max)
    np.testing.assert_array_equal(reached[1::2][neurons, neurons], second.accumulator_min)
