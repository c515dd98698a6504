"""A tabulated program (pack the input row, one table per output) computes exactly what the
layered program computes, and the circuit runs it only when its bootstraps cost less."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnn_sklearn.quantization import QuantizedModule
from qnn_sklearn.quantization.program import LinearStep, run_program
from qnn_sklearn.quantization.tabulation import (
    bootstraps,
    choose_program,
    every_row,
    packed_bits,
    program_cost_ms,
    tabulate,
)
from qnn_sklearn.torch import build_torch_model

BITS = {"model_inputs": 2, "op_weights": 4, "op_inputs": 4}
"""A 2-bit input grid and 4-bit layers: 16 input rows for 2 features, wide hidden lookups."""


def _two_feature_module(mlp, make_inputset, seed: int = 0, n_bits=None):
    torch.manual_seed(seed)
    model = mlp(
        torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 2),
    )  # fmt: skip
    inputset = make_inputset(200, n_features=2, seed=seed)
    return build_torch_model(model, inputset, n_bits=n_bits or BITS), inputset


def _levels(module) -> int:
    options = module.input_quantizer.options
    return options.qmax - options.qmin + 1


@pytest.fixture(scope="module")
def two_feature_module(mlp, make_inputset):
    return _two_feature_module(mlp, make_inputset)


@given(n_features=st.integers(1, 4), levels=st.integers(2, 6))
def test_every_row_packs_to_its_index(n_features, levels):
    rows = every_row(n_features, levels)
    assert rows.shape == (levels**n_features, n_features)
    assert rows.min() == 0 and rows.max() == levels - 1
    assert len(np.unique(rows, axis=0)) == len(rows)
    pack = tabulate([], (n_features,), levels)[0]  # the empty program: outputs = inputs
    assert isinstance(pack, LinearStep)
    packed = pack(rows)
    np.testing.assert_array_equal(packed, np.repeat(np.arange(len(rows))[:, None], n_features, 1))
    assert packed.max() < 2**pack.bit_width == 2 ** packed_bits(n_features, levels)


def test_auto_tabulates_a_narrow_input_and_agrees_on_every_row(two_feature_module, stress_inputs):
    module, inputset = two_feature_module
    layered = module.with_program("layered")
    assert module.program == "tabulated" and layered.program == "layered"
    # constructing a module does not tabulate: that is with_program's explicit step
    parts = QuantizedModule(
        module.input_shape,
        module.preprocessing,
        module.input_quantizer,
        module.layer_steps,
        module.output_stages,
        module.layers,
    )
    assert parts.program == "layered" and parts.steps is module.layer_steps
    # one lookup per output, at the packed input's 4 bits, instead of 16 wider hidden lookups
    assert bootstraps(module.steps) == [{"count": 2, "precision": 4, "lsbs_to_remove": 0}]
    assert program_cost_ms(module.steps) < program_cost_ms(layered.steps)
    rows = every_row(2, _levels(module))
    np.testing.assert_array_equal(run_program(module.steps, rows), run_program(layered.steps, rows))
    x = stress_inputs(inputset, 2000)
    np.testing.assert_array_equal(module.forward(x), layered.forward(x))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), input_bits=st.integers(1, 3), layer_bits=st.integers(2, 5))
def test_tabulated_program_equals_layered_program(mlp, make_inputset, seed, input_bits, layer_bits):
    bits = {"model_inputs": input_bits, "op_weights": layer_bits, "op_inputs": layer_bits}
    module, _ = _two_feature_module(mlp, make_inputset, seed, bits)
    tabulated = module.with_program("tabulated")
    rows = every_row(2, _levels(module))
    np.testing.assert_array_equal(
        run_program(tabulated.steps, rows), run_program(module.layer_steps, rows)
    )


def test_auto_keeps_the_layered_program_when_tables_cost_more(ptq_relu_mlp, stress_inputs):
    """4 features on a 3-bit grid pack into 12 bits: three 12-bit lookups cost far more than
    the network's narrow ones. Forced, the tabulation still computes the same integers."""
    module = ptq_relu_mlp.module
    assert module.program == "layered" and module.steps == module.layer_steps
    tabulated = module.with_program("tabulated")
    assert bootstraps(tabulated.steps) == [{"count": 3, "precision": 12, "lsbs_to_remove": 0}]
    x = stress_inputs(ptq_relu_mlp.inputset, 2000)
    np.testing.assert_array_equal(tabulated.forward(x), module.forward(x))


def test_a_program_wider_than_a_lookup_is_not_tabulated(mlp, make_inputset):
    torch.manual_seed(0)
    model = mlp(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    module = build_torch_model(model, make_inputset(100, n_features=8), n_bits=3)
    assert module.program == "layered"  # 8 features × 3 bits = 24 bits
    with pytest.raises(ValueError, match="24-bit packed input.*program='layered'"):
        module.with_program("tabulated")
    with pytest.raises(ValueError, match="program must be one of"):
        choose_program(module.layer_steps, module.input_shape, 8, "tables")


def test_tabulated_circuit_simulates_and_executes_like_clear(
    two_feature_module, stress_inputs, insecure_fhe_configuration
):
    module, inputset = two_feature_module
    module = module.with_program("auto")  # a copy: the shared module stays uncompiled
    circuit = module.compile(inputset, configuration=insecure_fhe_configuration)
    assert circuit.programmable_bootstrap_count == 2
    assert circuit.graph.maximum_integer_bit_width() == max(4, module.steps[-1].output_bits)
    q = module.quantize_input(stress_inputs(inputset, 500))
    clear = module.quantized_forward(q)
    np.testing.assert_array_equal(module.quantized_forward(q, fhe="simulate"), clear)
    rows = module.quantize_input(np.array([[-5.0, 5.0], [0.1, -0.2], [30.0, 30.0]]))
    np.testing.assert_array_equal(
        module.quantized_forward(rows, fhe="execute"), module.quantized_forward(rows)
    )
