"""QuantizedModule: clear integer forward, FHE simulation and FHE execution agree bit for bit;
bad input and misuse raise errors that name the problem."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from qnn_sklearn.quantization import DEFAULT_P_ERROR, CompileOptions
from qnn_sklearn.quantization.program import LinearStep, LookupStep
from qnn_sklearn.torch import build_torch_model

# -- simulation == clear integer forward, on 10,000 rows up to 100x outside calibration --------


def assert_simulation_equals_clear(case, stress_inputs, n_rows=10_000):
    module = case.module
    x = stress_inputs(case.inputset, n_rows)
    assert len(x) >= n_rows
    # the rows really leave the calibration range (certified bounds, not calibrated ones, hold)
    assert np.abs(x).max() >= 100 * np.abs(case.inputset).max()
    q = module.quantize_input(x)
    clear = module.quantized_forward(q, fhe="disable")
    simulated = module.quantized_forward(q, fhe="simulate")
    assert simulated.shape == clear.shape == (len(x), 3)
    mismatches = np.flatnonzero(np.any(simulated != clear, axis=1))
    assert mismatches.size == 0, f"{mismatches.size} rows differ, e.g. row {mismatches[:5]}"
    # and every accumulator of the last layer stays inside its certified range
    report = module.layers[-1]
    accumulator = clear + report.accumulator_min
    assert np.all(accumulator >= report.accumulator_min)
    assert np.all(accumulator <= report.accumulator_max)
    # the float outputs agree as well (same integers, same dequantization)
    np.testing.assert_array_equal(module.dequantize_output(simulated), module.forward(x))


def test_simulation_equals_clear_ptq_relu(ptq_relu_mlp, stress_inputs):
    assert_simulation_equals_clear(ptq_relu_mlp, stress_inputs)


def test_simulation_equals_clear_ptq_sigmoid_tanh(ptq_sigmoid_tanh_mlp, stress_inputs):
    assert_simulation_equals_clear(ptq_sigmoid_tanh_mlp, stress_inputs)


def test_simulation_equals_clear_brevitas_qat(brevitas_qat_mlp, stress_inputs):
    assert_simulation_equals_clear(brevitas_qat_mlp, stress_inputs)


@pytest.mark.parametrize("rounding_threshold_bits", [5, 3])
def test_simulation_equals_clear_with_rounding(
    rounding_threshold_bits, mlp, make_inputset, stress_inputs
):
    """With rounding_threshold_bits, each lookup first drops low bits of its accumulator
    (round_bit_pattern). The circuit must still equal the clear program bit for bit."""
    torch.manual_seed(0)
    model = mlp(
        torch.nn.Linear(4, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
    )
    inputset = make_inputset(200)
    module = build_torch_model(
        model, inputset, n_bits=4, rounding_threshold_bits=rounding_threshold_bits
    )
    module.compile(inputset)
    reports = module.bitwidth_report()
    assert all(r["lsbs_to_remove"] > 0 for r in reports[:-1])
    assert all(r["pbs_precision"] <= rounding_threshold_bits for r in reports[:-1])
    q = module.quantize_input(stress_inputs(inputset, 300))
    clear = module.quantized_forward(q)
    simulated = module.quantized_forward(q, fhe="simulate")
    n_bad = int(np.any(clear != simulated, axis=1).sum())
    assert n_bad == 0, f"{n_bad} of {len(q)} rows differ between simulation and clear"


# -- real FHE ----------------------------------------------------------------------------------


def test_fhe_execution_equals_clear(fhe_execution_mlp, insecure_fhe_configuration):
    module = fhe_execution_mlp.module
    # the configuration reached concrete through compile_torch_model: keys sit in its cache
    cache = Path(insecure_fhe_configuration.insecure_key_cache_location)
    assert any(cache.iterdir())
    inputset = fhe_execution_mlp.inputset
    clear_all = module.quantized_forward(module.quantize_input(inputset))
    # two rows whose clear outputs differ, so a constant circuit could not pass
    other = int(np.flatnonzero(np.any(clear_all != clear_all[0], axis=1))[0])
    x = inputset[[0, other]]
    q = module.quantize_input(x)
    executed = module.quantized_forward(q, fhe="execute")
    np.testing.assert_array_equal(executed, module.quantized_forward(q, fhe="disable"))
    np.testing.assert_array_equal(module.dequantize_output(executed), module.forward(x))


def test_verbose_shows_one_progress_step_per_row(ptq_relu_mlp, capsys):
    module = ptq_relu_mlp.module
    q = module.quantize_input(ptq_relu_mlp.inputset[:5])
    simulated = module.quantized_forward(q, fhe="simulate", verbose=True)
    np.testing.assert_array_equal(simulated, module.quantized_forward(q))
    progress = capsys.readouterr().err
    assert "FHE simulate" in progress and "5/5" in progress


# -- the clear ends of the pipeline ------------------------------------------------------------


def test_forward_is_quantize_program_dequantize(ptq_relu_mlp, stress_inputs):
    module = ptq_relu_mlp.module
    x = stress_inputs(ptq_relu_mlp.inputset, 500)
    q = module.quantize_input(x)
    options = module.input_quantizer.options
    assert q.dtype == np.int64
    assert q.min() >= 0 and q.max() <= options.qmax - options.qmin
    assert q.min() == 0 and q.max() == options.qmax - options.qmin  # corners reach both ends
    np.testing.assert_array_equal(q, module.input_quantizer.quant(x) - options.qmin)
    out = module.forward(x)
    np.testing.assert_array_equal(out, module.dequantize_output(module.quantized_forward(q)))
    # a single sample without batch axis is one row
    np.testing.assert_array_equal(module.forward(x[0]), out[:1])


# -- bit widths: report and circuit ------------------------------------------------------------


@pytest.mark.parametrize("case", ["ptq_relu_mlp", "ptq_sigmoid_tanh_mlp", "brevitas_qat_mlp"])
def test_bitwidth_report_and_circuit_agree(case, request):
    module = request.getfixturevalue(case).module
    assert module.program == "layered"  # 4 features: a tabulated program would cost more
    reports = module.bitwidth_report()
    linear = [s for s in module.layer_steps if isinstance(s, LinearStep)]
    lookups = [s for s in module.layer_steps if isinstance(s, LookupStep)]
    assert len(reports) == len(linear) == len(module.layers)
    for report, layer, step in zip(reports, module.layers, linear, strict=True):
        low, high = report["certified_range"]
        assert low == layer.accumulator_min.min() and high == layer.accumulator_max.max()
        # the calibrated range (compile's inputset) lies inside the certified one
        c_low, c_high = report["calibrated_range"]
        assert low <= c_low <= c_high <= high
        span = int((layer.accumulator_max - layer.accumulator_min).max())
        assert report["certified_bits"] == max(span.bit_length(), 1) == step.bit_width
        assert report["neurons"] == layer.n_neurons == step.weight_t.shape[1]
    # one bootstrap per hidden neuron, none for the output layer (its accumulator is returned)
    assert [r["pbs_count"] for r in reports] == [r["neurons"] for r in reports[:-1]] + [0]
    assert sum(r["pbs_count"] for r in reports) == sum(s.tables.shape[0] for s in lookups)
    circuit = module.fhe_circuit
    assert circuit.programmable_bootstrap_count == sum(r["pbs_count"] for r in reports)
    # the circuit is sized from the certified bounds, not only from the inputset
    widest = max(r["certified_bits"] for r in reports)
    assert circuit.graph.maximum_integer_bit_width() >= widest
    assert circuit.p_error <= DEFAULT_P_ERROR * (1 + 1e-6)


def test_compile_returns_and_stores_the_circuit(mlp, make_inputset):
    torch.manual_seed(7)
    model = mlp(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    inputset = make_inputset(50)
    module = build_torch_model(model, inputset, n_bits=2)
    assert module.fhe_circuit is None
    assert all(r["calibrated_range"] is None for r in module.bitwidth_report())
    circuit = module.compile(inputset, global_p_error=1e-3)
    assert circuit is module.fhe_circuit
    assert module.compile_options == CompileOptions(global_p_error=1e-3)
    assert circuit.global_p_error <= 1e-3 * (1 + 1e-6)
    assert all(r["calibrated_range"] is not None for r in module.bitwidth_report())
    q = module.quantize_input(inputset)
    # Simulation draws real PBS errors at this p_error: about one run in 20 of these 50 rows has
    # a wrong row; more than 3 has probability below 1e-6, so more means the circuit is wrong.
    wrong_rows = np.any(
        module.quantized_forward(q, fhe="simulate") != module.quantized_forward(q), axis=1
    )
    assert wrong_rows.sum() <= 3


def test_pickled_module_recompiles_its_circuit(mlp, make_inputset):
    torch.manual_seed(9)
    model = mlp(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    inputset = make_inputset(60, seed=9)
    module = build_torch_model(model, inputset, n_bits=2)
    fresh = pickle.loads(pickle.dumps(module))
    assert not fresh.is_compiled and fresh.fhe_circuit is None
    np.testing.assert_array_equal(fresh.forward(inputset), module.forward(inputset))

    module.compile(inputset)
    assert module.is_compiled
    restored = pickle.loads(pickle.dumps(module))
    assert restored.is_compiled
    q = restored.quantize_input(inputset)
    simulated = restored.quantized_forward(q, fhe="simulate")  # compiles again on demand
    assert restored.fhe_circuit is not None and restored.fhe_circuit is not module.fhe_circuit
    np.testing.assert_array_equal(simulated, module.quantized_forward(q))
    np.testing.assert_array_equal(restored.forward(inputset), module.forward(inputset))
    assert restored.bitwidth_report() == module.bitwidth_report()


# -- bad input and misuse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.array([[0.0, np.nan, 1.0, 2.0]]), "NaN or infinity"),
        (np.array([[0.0, 1.0, np.inf, 2.0]]), "NaN or infinity"),
        (np.array([[0.0, 1.0, 2.0, -np.inf]] * 3), "NaN or infinity"),
        (np.ones((2, 5)), r"shape \(2, 5\).*4 features"),
        (np.ones((2, 3)), r"shape \(2, 3\).*4 features"),
        (np.ones((2, 4, 1)), r"shape \(2, 4, 1\)"),
        (np.empty((0, 4)), "empty.*0 samples"),
        ([["a", "b", "c", "d"]], "numeric"),
    ],
)
@pytest.mark.parametrize("entry", ["forward", "quantize_input", "compile"])
def test_bad_input_is_named(ptq_relu_mlp, x, match, entry):
    module = ptq_relu_mlp.module
    circuit = module.fhe_circuit
    with pytest.raises(ValueError, match=match):
        getattr(module, entry)(x)
    assert module.fhe_circuit is circuit  # a failed compile leaves the module as it was


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p_error": 2.0},
        {"p_error": -1.0},
        {"p_error": 0.0},
        {"p_error": 1.0},
        {"p_error": float("nan")},
        {"p_error": "0.1"},
        {"p_error": True},
        {"global_p_error": 5.0},
        {"global_p_error": 0},
        {"p_error": 1e-3, "global_p_error": 1.0},
    ],
    ids=repr,
)
def test_error_probabilities_outside_zero_one_are_refused(ptq_relu_mlp, kwargs):
    """concrete-python accepts them, and simulation then disagrees with clear."""
    module = ptq_relu_mlp.module
    circuit, options = module.fhe_circuit, module.compile_options
    name = "global_p_error" if "global_p_error" in kwargs else "p_error"
    with pytest.raises(ValueError, match=rf"^{name} is a probability: it must be in \(0, 1\)"):
        module.compile(ptq_relu_mlp.inputset, **kwargs)
    assert module.fhe_circuit is circuit  # refused before anything was compiled
    assert module.compile_options is options


def test_empty_list_is_reported_as_empty_input(ptq_relu_mlp):
    """``[]`` holds zero samples; the error must say the input is empty, not that a
    (1, 0)-shaped batch has the wrong number of features."""
    with pytest.raises(ValueError, match="empty"):
        ptq_relu_mlp.module.forward([])


@pytest.mark.parametrize("mode", ["simulate", "execute"])
def test_fhe_before_compile_asks_for_compile(mode, mlp, make_inputset):
    torch.manual_seed(8)
    model = mlp(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    inputset = make_inputset(50)
    module = build_torch_model(model, inputset, n_bits=2)
    with pytest.raises(RuntimeError, match=r"call compile\(X\) first"):
        module.forward(inputset[:2], fhe=mode)
    with pytest.raises(RuntimeError, match=r"call compile\(X\) first"):
        module.quantized_forward(module.quantize_input(inputset[:2]), fhe=mode)
    # the clear integer model needs no circuit
    assert module.forward(inputset[:2]).shape == (2, 3)


@pytest.mark.parametrize("mode", ["fhe", "Simulate", "", None, True, "encrypt"])
def test_invalid_fhe_mode_is_named(ptq_relu_mlp, mode):
    module = ptq_relu_mlp.module
    with pytest.raises(ValueError, match="fhe must be one of"):
        module.forward(ptq_relu_mlp.inputset[:2], fhe=mode)
    with pytest.raises(ValueError, match="fhe must be one of"):
        module.quantized_forward(module.quantize_input(ptq_relu_mlp.inputset[:2]), fhe=mode)
