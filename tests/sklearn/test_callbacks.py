"""The pruning callbacks together: the network they hand back is the best one trained, within
budget."""

from __future__ import annotations

import numpy as np
import torch
from skorch.callbacks import Callback

from qnn_sklearn import NeuralNetClassifier
from qnn_sklearn.sklearn.callbacks import _evaluation_loss


class _RecordLosses(Callback):
    """Runs after the pruning callbacks (user callbacks follow the defaults)."""

    def on_train_begin(self, net, **kwargs):
        self.losses, self.over_budget = [], []

    def on_epoch_end(self, net, dataset_train=None, **kwargs):
        self.losses.append(_evaluation_loss(net, dataset_train))
        module = net.module_
        self.over_budget.append(
            sum(
                int((module.row_costs(linear, m) > module.accumulator_budget).sum())
                for linear, m in zip(module.linears, module._max_abs_inputs())
            )
        )


class _SpoilLastEpoch(Callback):
    """After every optimizer step of the last epoch, the output layer votes for class 0."""

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == net.max_epochs:
            with torch.no_grad():
                net.module_.linears[-1].bias.copy_(torch.tensor([50.0, 0.0, 0.0]))


def _training_loss(model, X, y) -> float:
    logits = model.forward(X.astype(np.float32))
    targets = torch.as_tensor(np.searchsorted(model.classes_, y))
    return float(torch.nn.functional.cross_entropy(logits, targets))


def test_hands_back_an_earlier_state_when_the_last_epoch_is_worse(iris_split):
    X_train, _, y_train, _ = iris_split
    record = _RecordLosses()
    model = NeuralNetClassifier(
        module__n_layers=2,
        max_epochs=6,
        lr=0.02,
        random_state=0,
        callbacks=[_SpoilLastEpoch(), record],
    ).fit(X_train, y_train)
    assert record.losses[-1] > 2 * min(record.losses[:-1])  # the last epoch was spoiled
    assert np.isclose(_training_loss(model, X_train, y_train), min(record.losses), rtol=1e-5)


def test_hands_back_the_lowest_training_loss_within_budget(iris_split):
    X_train, _, y_train, _ = iris_split
    record = _RecordLosses()
    epochs = 20
    model = NeuralNetClassifier(
        module__n_layers=3,
        module__n_hidden_neurons_multiplier=8,
        module__n_accum_bits=7,
        max_epochs=epochs,
        lr=0.05,
        random_state=0,
        callbacks=[record],
    ).fit(X_train, y_train)

    # every optimizer step is followed by the budget check: no epoch ends over budget
    assert record.over_budget == [0] * epochs
    losses = record.losses
    assert len(set(losses)) > 1  # the loss did move, so there was a choice
    # the last refresh is at the end of epoch 9 of 20 (the 10th would reach half the epochs);
    # training goes on from the best state so far, whose loss the recorder measures there
    last_refresh = epochs // 2 - 1
    assert np.isclose(losses[last_refresh - 1], min(losses[:last_refresh]), rtol=1e-6)
    # the permanent network (dead neurons dropped) computes what the best state computed
    assert np.isclose(_training_loss(model, X_train, y_train), min(losses), rtol=1e-5)


def test_best_state_is_restored_after_the_masks_last_refresh_whatever_its_fraction(iris_split):
    """The restore between the refresh and fixed-mask phases follows PruningMasks' own setting."""
    X_train, _, y_train, _ = iris_split
    refreshed_at, restored_at = [], []

    class _RecordRefreshesAndRestores(Callback):
        def on_train_begin(self, net, **kwargs):
            module = net.module_
            refresh, load = module.refresh_pruning, module.load_state_dict

            def recording_refresh():
                refreshed_at.append(len(net.history))
                return refresh()

            def recording_load(*args, **load_kwargs):
                restored_at.append(len(net.history))
                return load(*args, **load_kwargs)

            module.refresh_pruning, module.load_state_dict = recording_refresh, recording_load

    NeuralNetClassifier(
        module__n_layers=2,
        max_epochs=10,
        random_state=0,
        callbacks=[("record", _RecordRefreshesAndRestores())],
        callbacks__pruning_masks__refresh_fraction=0.3,
    ).fit(X_train.astype(np.float32), y_train)
    # refreshes stop before the default fraction's (half the epochs) would
    assert refreshed_at and max(refreshed_at) < 5
    # the best state comes back right after the last refresh, and again when training ends
    assert restored_at == [max(refreshed_at), 10]
