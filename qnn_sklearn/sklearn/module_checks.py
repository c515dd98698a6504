"""Module settings the estimators refuse in ``fit`` before the first epoch, not after it.

A misspelled ``module__`` parameter, or an activation the integer model cannot import, would
otherwise surface as a raw ``TypeError`` from the module's constructor, or as an unsupported
ONNX operator once training has ended.
"""

from __future__ import annotations

import difflib
import functools
import inspect

import numpy as np
import torch
from torch.nn.modules import activation as torch_activations

from ..onnx import UnsupportedOperatorError
from ..torch import build_brevitas_qat_model
from ..torch.network import SparseQuantNeuralNetwork

_PROBE_FEATURES = 2


def check_module_params(module_class, params: dict) -> None:
    """ValueError naming each ``module__`` parameter that ``module_class`` does not take."""
    parameters = inspect.signature(module_class).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return
    valid = [parameter.name for parameter in parameters]
    unknown = sorted(set(params) - set(valid))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        hints.append(f"module__{name}" + (f" (did you mean module__{close[0]}?)" if close else ""))
    raise ValueError(
        f"{module_class.__name__} has no parameter {', '.join(hints)}. Valid module parameters: "
        f"{', '.join(f'module__{name}' for name in valid)}."
    )


def import_failure(network_kwargs: dict) -> str | None:
    """Why the integer model cannot import a network with these arguments, at the smallest
    width (None: it can).

    This is the builder's own answer (ONNX export, then ``qnn_sklearn.onnx.import_onnx``), so it
    holds for any activation, a custom module too. It costs about 0.06 s; the probe runs
    under its own random state, so the fit that asks draws the same numbers as without it.
    """
    kwargs = {
        **network_kwargs,
        "input_dim": _PROBE_FEATURES,
        "n_outputs": 2,
        "n_hidden_neurons_multiplier": 1,
        "n_prune_neurons_percentage": 0.0,
    }
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = SparseQuantNeuralNetwork(**kwargs)
        network(torch.randn(8, _PROBE_FEATURES))  # a training step calibrates the quantizers
        network.eval()
        try:
            build_brevitas_qat_model(network, np.zeros((1, _PROBE_FEATURES)))
        except UnsupportedOperatorError as error:
            return f"it exports the ONNX operator {error.op_type!r}, which has no integer form."
        except ValueError as error:
            return str(error)
    return None


@functools.cache
def _cached_import_failure(network_items: tuple) -> str | None:
    """:func:`import_failure` once per distinct network setting: a grid search fits the same
    settings on every fold, and the probe is an ONNX export and import each time."""
    return import_failure(dict(network_items))


@functools.cache
def compilable_torch_activations() -> tuple[str, ...]:
    """Names of the torch.nn activations (those built without arguments) that the integer
    model imports, found by :func:`import_failure` on each."""
    names = []
    for name in sorted(torch_activations.__all__):
        activation = getattr(torch_activations, name)
        try:
            activation()
        except TypeError:  # needs arguments (e.g. Threshold, MultiheadAttention)
            continue
        try:
            failure = import_failure({"n_layers": 2, "activation_function": activation})
        except (RuntimeError, ValueError):  # not elementwise: changes the shape (GLU, Softmax2d)
            continue
        if failure is None:
            names.append(name)
    return tuple(names)


def check_activation_imports(network: SparseQuantNeuralNetwork) -> None:
    """ValueError before training if the integer model cannot import the network's hidden
    activation at its grids' settings; it names the activation and the ones that work."""
    kwargs = network.init_kwargs
    if kwargs["n_layers"] < 2:
        return  # no hidden layer: the activation is never used
    failure = _cached_import_failure(tuple(sorted({**kwargs, "n_layers": 2}.items())))
    if failure is None:
        return
    activation = kwargs["activation_function"]
    name = getattr(activation, "__name__", repr(activation))
    raise ValueError(
        f"module__activation_function={name} cannot run in the integer model: {failure} "
        f"Activations that can: {', '.join(compilable_torch_activations())}."
    )
