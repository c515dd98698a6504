"""Each layer's weights train at no more than its learning-rate limit (``limit_weight_lr``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from skorch.callbacks import Callback

from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor
from qnn_sklearn.torch.network import WEIGHT_LR_LIMIT
from qnn_sklearn.torch.pruning import raw_weight


def _lr_of_each_parameter(optimizer) -> dict[int, float]:
    lrs = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            assert id(parameter) not in lrs, "a parameter is in two groups"
            lrs[id(parameter)] = group["lr"]
    return lrs


def _initialized(input_dim: int, lr: float, **params) -> NeuralNetClassifier:
    return NeuralNetClassifier(
        lr=lr, module__input_dim=input_dim, module__n_outputs=3, **params
    ).initialize()


@pytest.mark.parametrize("estimator", [NeuralNetClassifier, NeuralNetRegressor])
def test_wide_layers_weights_train_at_their_limit(estimator):
    """At lr 1e-2 on 100 inputs (×4 hidden): weights at 1/(32·√fan_in) — 1/320 and 1/640 —
    and every other parameter (biases, quantizer scales) at lr, each in one group; the two
    layers of 400 inputs share theirs."""
    model = estimator(lr=1e-2, module__input_dim=100, module__n_outputs=3).initialize()
    assert len(model.optimizer_.param_groups) == 3
    lrs = _lr_of_each_parameter(model.optimizer_)
    assert set(lrs) == {id(parameter) for parameter in model.module_.parameters()}
    weights = {id(linear.weight): linear.in_features for linear in model.module_.linears}
    assert list(weights.values()) == [100, 400, 400]
    for parameter_id, lr in lrs.items():
        fan_in = weights.get(parameter_id)
        assert lr == (1e-2 if fan_in is None else WEIGHT_LR_LIMIT / math.sqrt(fan_in))


def test_the_default_lr_binds_no_layer_up_to_976_inputs():
    """At lr 1e-3 the limit binds a layer only from 977 inputs on: the defaults of every
    benchmark task (MNIST: 784) train as they did before the limit."""
    narrow = _initialized(976, 1e-3, module__n_hidden_neurons_multiplier=1)
    assert set(_lr_of_each_parameter(narrow.optimizer_).values()) == {1e-3}
    assert len(narrow.optimizer_.param_groups) == 1  # Adam steps each group apart
    wide = _initialized(977, 1e-3, module__n_hidden_neurons_multiplier=1)
    assert min(_lr_of_each_parameter(wide.optimizer_).values()) < 1e-3


@pytest.mark.parametrize(
    "params", [{"limit_weight_lr": False}, {"optimizer": torch.optim.SGD}], ids=["off", "SGD"]
)
def test_off_or_under_sgd_every_parameter_trains_at_lr(params):
    """SGD moves a weight by lr times its gradient, not by about lr: no limit applies."""
    model = _initialized(100, 1e-2, **params)
    assert set(_lr_of_each_parameter(model.optimizer_).values()) == {1e-2}


def test_adamw_is_limited_as_adam_is():
    model = _initialized(100, 1e-2, optimizer=torch.optim.AdamW)
    assert min(_lr_of_each_parameter(model.optimizer_).values()) == WEIGHT_LR_LIMIT / 20


def test_a_users_parameter_groups_keep_their_settings():
    """A group of ``optimizer__param_groups`` keeps its weight decay, and its lr where that is
    below the limit; its weight is still limited where the group's lr is above it."""
    model = _initialized(
        100,
        1e-2,
        optimizer__param_groups=[
            ("linears.1.*", {"lr": 1e-4, "weight_decay": 0.2}),
            ("linears.2.*", {"lr": 0.5}),
        ],
    )
    module = model.module_
    groups = {
        id(parameter): group
        for group in model.optimizer_.param_groups
        for parameter in group["params"]
    }
    assert groups[id(module.linears[1].weight)]["lr"] == 1e-4
    assert groups[id(module.linears[1].weight)]["weight_decay"] == 0.2
    assert groups[id(module.linears[1].bias)]["weight_decay"] == 0.2
    assert groups[id(module.linears[2].weight)]["lr"] == WEIGHT_LR_LIMIT / math.sqrt(400)
    assert groups[id(module.linears[2].bias)]["lr"] == 0.5


class _WeightLearningRates(Callback):
    """As each epoch begins: the lr of each layer's trained weight (the mask's original)."""

    def on_epoch_begin(self, net, **kwargs):
        lr_of = _lr_of_each_parameter(net.optimizer_)
        self.lrs = [lr_of[id(raw_weight(linear))] for linear in net.module_.linears]


def test_the_limits_hold_in_training_under_the_masks():
    """The optimizer is built again when the masks go on, and the weights it limits are the
    ones that train: the masks' originals."""
    X, y = make_classification(200, n_features=100, random_state=0)
    record = _WeightLearningRates()
    model = NeuralNetClassifier(
        lr=1e-2,
        max_epochs=1,
        random_state=0,
        callbacks=[("record", record)],
        callbacks__annealed_learning_rate=None,
    ).fit(X.astype(np.float32), y)
    assert record.lrs == [WEIGHT_LR_LIMIT / math.sqrt(fan_in) for fan_in in (100, 400, 400)]
    assert model.optimizer_.param_groups[0]["lr"] == 1e-2  # biases and scales


def test_an_invalid_limit_weight_lr_raises_before_training():
    X, y = make_classification(60, n_features=4, random_state=0)
    with pytest.raises(ValueError, match="limit_weight_lr must be True or False"):
        NeuralNetClassifier(limit_weight_lr="yes", max_epochs=1).fit(X.astype(np.float32), y)


def test_the_limits_come_back_when_partial_fit_begins():
    """skorch's ``set_params(lr=...)`` sets every group of a fitted estimator to that lr; the
    next ``partial_fit`` builds the optimizer again, with the limits (of the widths before
    pruning: the pruned network keeps them)."""
    X, y = make_classification(200, n_features=100, random_state=0)
    X = X.astype(np.float32)
    model = NeuralNetClassifier(
        lr=1e-2, max_epochs=1, random_state=0, callbacks__annealed_learning_rate=None
    ).fit(X, y)
    model.set_params(lr=0.05)
    assert {group["lr"] for group in model.optimizer_.param_groups} == {0.05}
    model.partial_fit(X, y)
    lrs = {group["lr"] for group in model.optimizer_.param_groups}
    assert lrs == {WEIGHT_LR_LIMIT / math.sqrt(100), WEIGHT_LR_LIMIT / math.sqrt(400), 0.05}
