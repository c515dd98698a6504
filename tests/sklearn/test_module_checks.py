"""Module settings are refused in fit before the first epoch; every activation the integer
model imports trains, compiles and simulates as the clear integer model computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from qnn_sklearn import NeuralNetClassifier
from qnn_sklearn.sklearn.module_checks import compilable_torch_activations, import_failure

TINY = {
    "module__n_layers": 2,
    "module__n_hidden_neurons_multiplier": 2,
    "max_epochs": 15,
    "lr": 0.02,
    "random_state": 0,
}


class TrainingSpy(Callback):
    """Records whether training began."""

    def initialize(self):
        self.began = False
        return self

    def on_train_begin(self, net, **kwargs):
        self.began = True


def _refused_before_training(match: str, **params) -> None:
    X = np.random.default_rng(0).normal(size=(40, 4))
    y = np.arange(40) % 2
    spy = TrainingSpy()
    model = NeuralNetClassifier(callbacks=[("spy", spy)], **{**TINY, **params})
    with pytest.raises(ValueError, match=match):
        model.fit(X, y)
    assert not spy.began


@pytest.mark.parametrize("activation", [torch.nn.LogSigmoid, torch.nn.Softshrink])
def test_an_activation_without_integer_form_is_refused_before_training(activation):
    name = activation.__name__
    _refused_before_training(
        f"activation_function={name} cannot run.*ONNX operator.*can: .*GELU.*Hardswish",
        module__activation_function=activation,
    )


def test_an_unused_activation_is_not_checked():
    """A network without a hidden layer never instantiates its activation."""
    X = np.random.default_rng(0).normal(size=(40, 4))
    y = np.arange(40) % 2
    model = NeuralNetClassifier(
        **{**TINY, "module__n_layers": 1, "max_epochs": 2},
        module__activation_function=torch.nn.LogSigmoid,
    ).fit(X, y)
    assert model.module_.hidden_widths() == []


def test_the_list_of_compilable_activations():
    """What the builder imports among torch.nn's activations, probed one by one."""
    names = set(compilable_torch_activations())
    elementwise = {"ReLU", "ReLU6", "Hardtanh", "GELU", "Hardswish", "Hardsigmoid", "SiLU"}
    elementwise |= {"Mish", "CELU", "ELU", "SELU", "LeakyReLU", "RReLU", "PReLU", "Softplus"}
    elementwise |= {"Softsign", "Tanhshrink", "Sigmoid", "Tanh"}
    assert elementwise <= names
    assert not names & {"LogSigmoid", "Softshrink", "Hardshrink", "Softmax", "LogSoftmax", "GLU"}


def test_the_probe_leaves_the_random_state_alone():
    """The fit that probes draws the same random numbers as without the probe."""
    state = torch.get_rng_state()
    assert import_failure({"n_layers": 2, "activation_function": torch.nn.GELU}) is None
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"module__n_w_bits": 1}, "n_w_bits must be an integer >= 2, got 1"),
        ({"module__n_a_bits": 1}, "n_a_bits must be an integer >= 2, got 1"),
        (
            {"module__n_input_bits": 1, "module__quant_signed": False},
            "n_input_bits must be an integer >= 2, got 1",
        ),
        (
            {"module__n_layer": 3},
            r"no parameter module__n_layer \(did you mean module__n_layers\?\).*"
            "module__n_w_bits",
        ),
    ],
    ids=["1-bit weights", "1-bit activations", "1-bit unsigned input", "misspelled"],
)
def test_settings_are_refused_before_training(params, match):
    _refused_before_training(match, **params)


def test_a_misspelled_estimator_parameter_is_refused_before_training():
    """skorch's own check, in fit: a misspelled estimator parameter is named."""
    _refused_before_training("unexpected argument.*max_epoch.*typo", max_epoch=3)


@pytest.mark.parametrize(
    "activation",
    [
        torch.nn.GELU,
        torch.nn.ReLU6,
        torch.nn.Hardswish,
        torch.nn.SiLU,
        torch.nn.Mish,
        torch.nn.PReLU,
    ],
    ids=lambda activation: activation.__name__,
)
def test_activation_trains_and_every_path_agrees(activation, iris_split):
    """Brevitas' forward equals the integer model on the test rows and far outside them;
    simulation equals the clear integer model on inputs 100σ out."""
    X_train, X_test, y_train, _ = iris_split
    model = NeuralNetClassifier(module__activation_function=activation, **TINY)
    model.fit(X_train, y_train)
    assert isinstance(model.module_.activations[0], activation)
    rng = np.random.default_rng(0)
    X_extreme = rng.normal(size=(300, X_train.shape[1])) * rng.uniform(1, 100, size=(300, 1))
    rows = np.concatenate([X_test, X_extreme]).astype(np.float32)
    np.testing.assert_allclose(
        model.quantized_module_.forward(rows), model.forward(rows).numpy(), atol=1e-4
    )
    assert len(np.unique(model.predict(X_test))) >= 2  # it learned something
    model.compile(X_train)
    np.testing.assert_array_equal(
        model.predict(X_extreme, fhe="simulate"), model.predict(X_extreme)
    )
