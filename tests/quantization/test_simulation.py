"""Batched simulation: many rows go through a simulation-only circuit with a batch axis; it
equals the clear program and the row-by-row simulation of the FHE circuit."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from qnn_sklearn.torch import build_torch_model


def test_batched_simulation_equals_row_by_row_and_clear(ptq_relu_mlp, stress_inputs):
    module = ptq_relu_mlp.module
    x = stress_inputs(ptq_relu_mlp.inputset, 3 * module.run_options.simulation_batch // 2)
    q = module.quantize_input(x)
    batched = module.quantized_forward(q, fhe="simulate")  # a full and a padded batch
    np.testing.assert_array_equal(batched, module.quantized_forward(q))
    few = q[
        : module.run_options.min_batched_rows - 1
    ]  # below the threshold: the FHE circuit, per row
    np.testing.assert_array_equal(
        module.quantized_forward(few, fhe="simulate"), batched[: len(few)]
    )
    simulation = module._simulation_circuit()
    assert simulation.configuration.fhe_execution is False
    assert simulation.configuration.fhe_simulation is True
    # each element keeps the FHE circuit's bit widths
    assert (
        simulation.graph.maximum_integer_bit_width()
        == module.fhe_circuit.graph.maximum_integer_bit_width()
    )


def test_simulation_circuit_is_not_pickled(ptq_relu_mlp):
    module = ptq_relu_mlp.module
    module._simulation_circuit()
    restored = pickle.loads(pickle.dumps(module))
    assert restored._simulation is None
    q = module.quantize_input(ptq_relu_mlp.inputset[:100])
    np.testing.assert_array_equal(
        restored.quantized_forward(q, fhe="simulate"), module.quantized_forward(q)
    )


def test_simulation_circuit_keeps_the_per_bootstrap_error(mlp, make_inputset):
    """A global_p_error is spread over the bootstraps of one row; the batched circuit has many
    more, so it takes the FHE circuit's per-bootstrap p_error instead."""
    torch.manual_seed(7)
    model = mlp(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    inputset = make_inputset(50)
    module = build_torch_model(model, inputset, n_bits=2)
    module.compile(inputset, global_p_error=1e-3)
    simulation = module._simulation_circuit()
    assert simulation.configuration.global_p_error is None
    assert simulation.configuration.p_error == module.fhe_circuit.p_error
    assert simulation.p_error <= module.fhe_circuit.p_error * (1 + 1e-6)
