"""compile_torch_model / compile_brevitas_qat_model and their build_* variants."""

from __future__ import annotations

import warnings

import brevitas.nn as qnn
import numpy as np
import pytest
import torch

from qnn_sklearn.quantization import QuantizedModule
from qnn_sklearn.quantization.program import LinearStep, LookupStep
from qnn_sklearn.torch import (
    build_brevitas_qat_model,
    build_torch_model,
    compile_brevitas_qat_model,
    compile_torch_model,
)


def torch_output(model, x):
    with torch.no_grad():
        out = model(torch.tensor(x, dtype=torch.float32))
    return getattr(out, "value", out).numpy().astype(np.float64)


@pytest.fixture
def small_mlp(mlp):
    torch.manual_seed(30)
    return mlp(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))


# -- Brevitas import ---------------------------------------------------------------------------


def test_brevitas_import_agrees_with_brevitas(brevitas_qat_mlp, stress_inputs):
    """≥ 99.9% of argmax predictions agree with Brevitas' own forward on 10,000 rows, from
    the calibration range to 100x outside it."""
    model, module = brevitas_qat_mlp.torch_model, brevitas_qat_mlp.module
    assert not model.training
    x = stress_inputs(brevitas_qat_mlp.inputset, 10_000).astype(np.float32)
    reference = torch_output(model, x)
    out = module.forward(x)
    assert out.shape == reference.shape == (10_000, 3)
    agreement = np.mean(out.argmax(axis=1) == reference.argmax(axis=1))
    assert agreement >= 0.999, f"argmax agreement {agreement:.4%}"
    # not only the argmax: the dequantized outputs are Brevitas' outputs (float32 rounding)
    close = np.all(np.isclose(out, reference, rtol=1e-4, atol=1e-4), axis=1)
    assert close.mean() >= 0.999
    # the model was trained: its predictions are not constant
    assert len(np.unique(reference.argmax(axis=1))) >= 2


def test_brevitas_integer_weights_and_input_grid_are_imported(brevitas_qat_mlp):
    model, module = brevitas_qat_mlp.torch_model, brevitas_qat_mlp.module
    linear = [step for step in module.layer_steps if isinstance(step, LinearStep)]
    layers = [model.fc1, model.fc2, model.fc3]
    assert len(linear) == len(layers)
    for step, layer in zip(linear, layers, strict=True):
        expected = layer.quant_weight().int().numpy().astype(np.int64)
        np.testing.assert_array_equal(step.weight_t.T, expected)
        assert np.abs(expected).max() <= 4  # 3-bit weights
    with torch.no_grad():
        input_quant = model.quant_input(torch.zeros(1, 4))
    assert module.input_quantizer.scale == pytest.approx(float(input_quant.scale), rel=1e-6)
    assert module.input_quantizer.zero_point == int(input_quant.zero_point)
    options = module.input_quantizer.options
    assert (options.n_bits, options.is_signed) == (3, True)
    # every hidden activation is a 3-bit lookup: 8 output levels at most
    for step in module.layer_steps:
        if isinstance(step, LookupStep):
            assert step.tables.max() <= 7 and step.output_bits <= 3


def test_brevitas_sign_pattern_inputs_reach_the_certified_bounds(brevitas_qat_mlp):
    """The first layer's certified bounds, computed from Brevitas' integer weights, are
    reached by float inputs that follow the signs of each neuron's weights."""
    model, module = brevitas_qat_mlp.torch_model, brevitas_qat_mlp.module
    w = model.fc1.quant_weight().int().numpy().astype(np.int64)
    grid = module.input_quantizer.options
    zero_point = module.input_quantizer.zero_point
    lo, hi = grid.qmin - zero_point, grid.qmax - zero_point
    expected_max = np.maximum(w * lo, w * hi).sum(axis=1)
    expected_min = np.minimum(w * lo, w * hi).sum(axis=1)
    report = module.layers[0]
    np.testing.assert_array_equal(report.accumulator_max, expected_max)
    np.testing.assert_array_equal(report.accumulator_min, expected_min)
    signs = np.where(w > 0, 1.0, -1.0)
    x = 1e3 * np.concatenate([signs, -signs])
    accumulator = module.layer_steps[0](module.quantize_input(x)) + report.accumulator_min
    neurons = np.arange(len(w))
    np.testing.assert_array_equal(accumulator[neurons, neurons], expected_max)
    np.testing.assert_array_equal(accumulator[len(w) + neurons, neurons], expected_min)


def test_compile_brevitas_qat_model_compiles(make_inputset):
    torch.manual_seed(31)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant_input = qnn.QuantIdentity(bit_width=2, return_quant_tensor=True)
            self.fc1 = qnn.QuantLinear(4, 4, bias=True, weight_bit_width=2)
            self.act = qnn.QuantReLU(bit_width=2, return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(4, 3, bias=True, weight_bit_width=2)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(self.quant_input(x))))

    model = Tiny()
    inputset = make_inputset(64, seed=32)
    model.train()
    with torch.no_grad():
        model(torch.tensor(inputset))  # calibration pass of the activation scales
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = compile_brevitas_qat_model(model, inputset)
    assert isinstance(module, QuantizedModule) and module.fhe_circuit is not None
    q = module.quantize_input(inputset)
    np.testing.assert_array_equal(
        module.quantized_forward(q, fhe="simulate"), module.quantized_forward(q)
    )
    agreement = np.mean(
        module.forward(inputset).argmax(axis=1) == torch_output(model, inputset).argmax(axis=1)
    )
    assert agreement >= 0.99


def _brevitas_without_input_quantizer():
    class NoInputQuant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = qnn.QuantLinear(4, 8, weight_bit_width=3)
            self.act = qnn.QuantReLU(bit_width=3, return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(8, 3, weight_bit_width=3)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    return NoInputQuant()


def _brevitas_with_softmax():
    class WithSoftmax(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant_input = qnn.QuantIdentity(bit_width=3, return_quant_tensor=True)
            self.fc1 = qnn.QuantLinear(4, 8, weight_bit_width=3)
            self.act = qnn.QuantReLU(bit_width=3, return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(8, 3, weight_bit_width=3)

        def forward(self, x):
            return torch.softmax(self.fc2(self.act(self.fc1(self.quant_input(x)))), dim=1)

    return WithSoftmax()


@pytest.mark.parametrize(
    ("make_model", "match"),
    [
        (_brevitas_without_input_quantizer, "which no quantizer precedes.*needs a Quant node"),
        (_brevitas_with_softmax, "Unsupported ONNX operator 'Softmax'.*Supported: .*Gemm"),
    ],
    ids=["no-input-quantizer", "softmax"],
)
def test_brevitas_graph_errors_are_named(make_model, match, make_inputset):
    model = make_model().eval()
    with warnings.catch_warnings(), pytest.raises(ValueError, match=match):
        warnings.simplefilter("ignore")
        build_brevitas_qat_model(model, make_inputset(8))


# -- post-training quantization ----------------------------------------------------------------


def test_build_does_not_compile_and_compile_does(small_mlp, make_inputset):
    inputset = make_inputset(80, seed=33)
    built = build_torch_model(small_mlp, inputset, n_bits=2)
    assert built.fhe_circuit is None
    compiled = compile_torch_model(small_mlp, torch.tensor(inputset), n_bits=2)
    assert compiled.fhe_circuit is not None
    # same calibration, same integer model
    np.testing.assert_array_equal(built.forward(inputset), compiled.forward(inputset))
    q = compiled.quantize_input(inputset)
    np.testing.assert_array_equal(
        compiled.quantized_forward(q, fhe="simulate"), compiled.quantized_forward(q)
    )


def test_n_bits_per_role(small_mlp, make_inputset):
    inputset = make_inputset(100, seed=34)
    n_bits = {"model_inputs": 5, "op_weights": 3, "op_inputs": 2}
    module = build_torch_model(small_mlp, inputset, n_bits=n_bits)
    assert module.input_quantizer.options.n_bits == 5
    q = module.quantize_input(inputset * 100)
    assert q.max() == 2**5 - 1
    first, lookup = module.layer_steps[0], module.layer_steps[1]
    assert isinstance(first, LinearStep) and isinstance(lookup, LookupStep)
    # symmetric 3-bit weights use [-3, 3], and the largest magnitude is used
    assert np.abs(first.weight_t).max() == 3
    # a 2-bit activation quantizer: at most 4 levels per neuron
    assert lookup.tables.max() <= 3 and lookup.output_bits <= 2


def test_ptq_input_quantizer_is_calibrated_on_the_inputset(small_mlp, make_inputset):
    inputset = make_inputset(100, seed=35)
    module = build_torch_model(small_mlp, inputset, n_bits=4)
    quantizer = module.input_quantizer
    assert not quantizer.options.is_signed and quantizer.options.n_bits == 4
    covered = quantizer.dequant([quantizer.options.qmin, quantizer.options.qmax])
    assert covered[0] <= min(inputset.min(), 0) + quantizer.scale / 2
    assert covered[1] >= inputset.max() - quantizer.scale / 2
    # the grid spans the inputset, and no more: one step per 1/15 of its range
    span = max(inputset.max(), 0) - min(inputset.min(), 0)
    assert quantizer.scale == pytest.approx(span / 15)


@pytest.mark.parametrize(
    ("n_bits", "match"),
    [
        (0, "n_bits must be at least 1"),
        (-2, "n_bits must be at least 1"),
        (2.5, "n_bits must be an integer"),
        ("3", "n_bits must be an integer"),
        (None, "n_bits must be an integer"),
        ({"model_inputs": 3, "op_weights": 3}, r"n_bits dict needs the keys.*op_inputs"),
        ({"model_inputs": 3, "op_weights": 0, "op_inputs": 3}, "n_bits must be at least 1"),
        (12, "at most 16 bits"),
        (1, "n_bits"),
        ({"model_inputs": 3, "op_weights": 1, "op_inputs": 3}, "n_bits"),
    ],
    ids=[
        "zero",
        "negative",
        "float",
        "string",
        "none",
        "dict-missing-key",
        "dict-zero",
        "too-wide",
        "one-bit",
        "one-bit-weights",
    ],
)
def test_invalid_n_bits_are_named(n_bits, match, small_mlp, make_inputset):
    """One-bit weights would be a signed symmetric grid {-1, 0}, which cannot hold a positive
    weight; that must be a ValueError naming n_bits, like the other invalid settings."""
    with pytest.raises(ValueError, match=match):
        build_torch_model(small_mlp, make_inputset(20), n_bits=n_bits)


@pytest.mark.parametrize(
    ("inputset", "match"),
    [
        (np.empty((0, 4)), "non-empty batch"),
        (np.ones(4), "non-empty batch"),
        (np.array([[0.0, np.nan, 1.0, 2.0]]), "NaN or infinity"),
        (np.array([[0.0, np.inf, 1.0, 2.0]]), "NaN or infinity"),
    ],
    ids=["empty", "one-dimensional", "nan", "inf"],
)
@pytest.mark.parametrize("entry", [build_torch_model, compile_torch_model])
def test_invalid_inputsets_are_named(inputset, match, entry, small_mlp):
    with pytest.raises(ValueError, match=match):
        entry(small_mlp, inputset)


def test_ptq_of_a_model_that_reshapes_its_input(op_net):
    """``x.reshape`` before the first layer is client-side preprocessing (QuantizedReshape
    supports it), so PTQ must work: calibration evaluates the graph, Reshape included."""
    torch.manual_seed(36)
    model = op_net("reshape")
    inputset = np.random.default_rng(37).normal(size=(200, 2, 2)).astype(np.float32)
    module = build_torch_model(model, inputset, n_bits=6)
    assert module.input_shape == (2, 2)
    reference = torch_output(model, inputset)
    assert np.abs(module.forward(inputset) - reference).max() <= 0.1 * np.ptp(reference)


def _conv_net():
    class ConvNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 2, kernel_size=2)
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    return ConvNet()


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (lambda: torch.nn.Softmax(dim=1), "Unsupported ONNX operator 'Softmax'"),
        (lambda: torch.nn.LayerNorm(8), "Unsupported ONNX operator 'LayerNormalization'"),
        (lambda: torch.nn.LogSigmoid(), "Unsupported ONNX operator 'Log'"),
        (lambda: torch.nn.Softshrink(), "Unsupported ONNX operator 'Greater'"),
    ],
    ids=["softmax", "layernorm", "logsigmoid", "softshrink"],
)
@pytest.mark.parametrize("entry", [build_torch_model, compile_torch_model])
def test_unsupported_torch_layers_are_named(layer, match, entry, mlp, make_inputset):
    model = mlp(torch.nn.Linear(4, 8), layer(), torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match=match):
        entry(model, make_inputset(20))


def test_conv1d_net_compiles_and_simulates_exactly():
    """A 1-D convolution (issue 17; it used to be refused as an unsupported operator)."""
    inputset = np.random.default_rng(38).normal(size=(20, 1, 4)).astype(np.float32)
    module = compile_torch_model(_conv_net().eval(), inputset)
    q = module.quantize_input(100 * inputset)
    np.testing.assert_array_equal(
        module.quantized_forward(q, fhe="simulate"), module.quantized_forward(q)
    )


@pytest.mark.parametrize("kwargs", [{"p_error": 2.0}, {"global_p_error": -0.5}], ids=repr)
def test_compile_torch_model_refuses_error_probabilities_outside_zero_one(
    kwargs, small_mlp, make_inputset
):
    (name,) = kwargs
    with pytest.raises(ValueError, match=rf"^{name} is a probability"):
        compile_torch_model(small_mlp, make_inputset(20), **kwargs)
