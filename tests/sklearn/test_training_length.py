"""max_epochs="auto": enough optimizer steps on small sets, 50 epochs on large ones."""

import numpy as np
import pytest

from qnn_sklearn import NeuralNetClassifier
from qnn_sklearn.sklearn.training_length import (
    MIN_AUTO_EPOCHS,
    MIN_AUTO_STEPS,
    training_epochs,
)


@pytest.mark.parametrize(
    "n_rows, batch_size, expected",
    [
        (112, 64, 500),  # iris's training split: 2 batches per epoch
        (426, 64, 143),  # breast_cancer's: 7 batches
        (100_000, 64, MIN_AUTO_EPOCHS),
        (500, -1, MIN_AUTO_STEPS),  # skorch's -1: the whole set in one batch
    ],
)
def test_auto_epochs_reach_the_minimum_steps(n_rows, batch_size, expected):
    epochs = training_epochs("auto", n_rows, batch_size)
    assert epochs == expected
    batches = 1 if batch_size == -1 else -(-n_rows // batch_size)
    assert epochs * batches >= MIN_AUTO_STEPS


def test_an_integer_is_kept():
    assert training_epochs(7, 112, 64) == 7


@pytest.mark.parametrize("value", [0, -3, 2.5, "many", None, True])
def test_other_values_are_refused_before_training(value):
    with pytest.raises(ValueError, match='positive integer or "auto"'):
        NeuralNetClassifier(max_epochs=value).fit(np.zeros((8, 2)), [0, 1] * 4)


def test_fit_trains_the_auto_epochs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    model = NeuralNetClassifier(
        module__n_layers=2, module__n_hidden_neurons_multiplier=2, batch_size=8, random_state=0
    ).fit(X, y)
    assert model.training_epochs_ == MIN_AUTO_STEPS // 5 == len(model.history)
