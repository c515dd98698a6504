"""CompileOptions: validated once, and the one source of every circuit's configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qnn_sklearn.fhe_runtime import fhe
from qnn_sklearn.quantization import DEFAULT_P_ERROR, CompileOptions


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p_error": 0},
        {"p_error": 1},
        {"p_error": 2.0},
        {"p_error": -1e-3},
        {"p_error": True},
        {"p_error": "0.1"},
        {"p_error": float("nan")},
        {"global_p_error": 1.0},
        {"p_error": 1e-3, "global_p_error": 0.0},
    ],
    ids=repr,
)
def test_probabilities_outside_zero_one_are_refused(kwargs):
    name = "global_p_error" if "global_p_error" in kwargs else "p_error"
    with pytest.raises(ValueError, match=rf"^{name} is a probability: it must be in \(0, 1\)"):
        CompileOptions(**kwargs)


def test_default_p_error_only_without_either_probability():
    assert CompileOptions().circuit_configuration().p_error == DEFAULT_P_ERROR
    configuration = CompileOptions(global_p_error=1e-3).circuit_configuration()
    assert (configuration.p_error, configuration.global_p_error) == (None, 1e-3)
    configuration = CompileOptions(p_error=1e-5).circuit_configuration()
    assert (configuration.p_error, configuration.global_p_error) == (1e-5, None)


def test_configurations_keep_the_users_other_settings():
    options = CompileOptions(
        global_p_error=1e-3, configuration=fhe.Configuration(compress_evaluation_keys=True)
    )
    simulation = options.simulation_configuration(np.float64(2.5e-7))
    assert options.circuit_configuration().compress_evaluation_keys
    assert simulation.compress_evaluation_keys
    # the executing circuit's per-bootstrap probability, never a global budget
    assert (simulation.p_error, simulation.global_p_error) == (2.5e-7, None)
    assert simulation.fhe_simulation and not simulation.fhe_execution


@pytest.mark.parametrize(
    "options",
    [
        CompileOptions(),
        CompileOptions(p_error=np.float32(2**-10)),
        CompileOptions(global_p_error=1e-3),
    ],
    ids=repr,
)
def test_the_error_probabilities_round_trip_through_json(options):
    data = json.loads(json.dumps(options.to_json()))
    loaded = CompileOptions.from_json(data, "compile_options")
    assert (loaded.p_error, loaded.global_p_error) == (options.p_error, options.global_p_error)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([2**-10], "must be an object with exactly the keys"),
        ({"p_error": 1e-3}, "must be an object with exactly the keys"),
        ({"p_error": 1e-3, "global_p_error": None, "configuration": {}}, "exactly the keys"),
        ({"p_error": "1e-3", "global_p_error": None}, "p_error is a probability"),
        ({"p_error": None, "global_p_error": 10**400}, "global_p_error is a probability"),
        ({"p_error": ["x"] * 10**5, "global_p_error": None}, r"got \['x', 'x'"),
    ],
)
def test_saved_error_probabilities_are_checked(data, message):
    with pytest.raises(ValueError, match=f"^compile_options.*{message}") as raised:
        CompileOptions.from_json(data, "compile_options")
    assert len(str(raised.value)) < 300
