"""The pruning callbacks together: the network they hand back is the best one trained, within
budget, chosen on the validation loss or, without a split, on each epoch's final network:
a classifier's accuracy (``train_eval_acc``), then its loss (``train_eval_loss``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import ValidSplit

from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor
from qnn_sklearn.sklearn import callbacks


class _RecordEpochs(Callback):
    """Runs after the pruning callbacks (user callbacks follow the defaults): the network's
    output on ``X`` at each epoch's end, and at the start of each epoch once the pruning
    callbacks are done with it; the neurons over budget at each epoch's end."""

    def __init__(self, X):
        self.X = X.astype(np.float32)

    def on_train_begin(self, net, **kwargs):
        self.outputs, self.begin_outputs, self.over_budget = [], [], []

    def on_epoch_begin(self, net, **kwargs):
        self.begin_outputs.append(net.forward(self.X))

    def on_epoch_end(self, net, **kwargs):
        self.outputs.append(net.forward(self.X))
        module = net.module_
        self.over_budget.append(sum(int(over.sum()) for over in module.rows_over_budget()))


class _SpoilLastEpoch(Callback):
    """After every optimizer step of the last epoch, the output layer votes for class 0."""

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == net.max_epochs:
            with torch.no_grad():
                net.module_.linears[-1].bias.copy_(torch.tensor([50.0, 0.0, 0.0]))


class _CountRows(Callback):
    """Rows the network computes from an epoch's start to its end (callbacks included)."""

    def on_train_begin(self, net, **kwargs):
        forward = net.module_.forward
        self.rows = 0

        def counting_forward(x):
            self.rows += len(x)
            return forward(x)

        net.module_.forward = counting_forward
        self.per_epoch = []

    def on_epoch_begin(self, net, **kwargs):
        self.rows = 0

    def on_epoch_end(self, net, **kwargs):
        self.per_epoch.append(self.rows)


def _best_epoch(history, n_rows: int, epochs=slice(None)) -> int:
    """The epoch BestTrainingState chooses among ``epochs``: most training rows right (of the
    mean weight), lowest loss among equals."""
    rows_right = np.round(np.asarray(history[:, "train_eval_acc"])[epochs] * n_rows)
    losses = np.asarray(history[:, "train_eval_loss"])[epochs]
    return int(np.lexsort((losses, -rows_right))[0])


def _assert_same_output(model, X, expected):
    torch.testing.assert_close(model.forward(X.astype(np.float32)), expected, rtol=1e-5, atol=1e-5)


def test_hands_back_an_earlier_state_when_the_last_epoch_is_worse(iris_split):
    X_train, _, y_train, _ = iris_split
    record = _RecordEpochs(X_train)
    model = NeuralNetClassifier(
        module__n_layers=2,
        max_epochs=6,
        lr=0.02,
        random_state=0,
        callbacks=[_SpoilLastEpoch(), record],
    ).fit(X_train, y_train)
    losses = model.history[:, "train_eval_loss"]
    assert losses[-1] > 2 * min(losses[:-1])  # the last epoch was spoiled
    assert _best_epoch(model.history, len(X_train)) < 5
    # the permanent network (masks baked in) computes what the best epoch's network computed
    _assert_same_output(model, X_train, record.outputs[_best_epoch(model.history, len(X_train))])


def test_hands_back_the_best_training_state_within_budget(iris_split):
    X_train, _, y_train, _ = iris_split
    record = _RecordEpochs(X_train)
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
    losses = model.history[:, "train_eval_loss"]
    assert len(set(losses)) > 1  # the loss did move, so there was a choice
    # the masks are refreshed after epochs 0-9 (half the epochs); the fixed-mask epochs
    # start from the best of those, restored as epoch 10 begins
    first_fixed = epochs // 2
    best_refresh_epoch = _best_epoch(model.history, len(X_train), slice(0, first_fixed))
    torch.testing.assert_close(
        record.begin_outputs[first_fixed], record.outputs[best_refresh_epoch]
    )
    _assert_same_output(model, X_train, record.outputs[_best_epoch(model.history, len(X_train))])


def test_training_accuracy_is_weighted_as_the_loss_and_ranks_first(iris_split):
    """``train_eval_acc`` is each epoch's network's accuracy on the rows, weighted by
    ``sample_weight``; a classifier hands back the most accurate epoch's network, and a
    regressor, which has no accuracy, records none."""
    X_train, _, y_train, _ = iris_split
    weights = np.where(y_train == "setosa", 5.0, 1.0)
    record = _RecordEpochs(X_train)
    model = NeuralNetClassifier(
        module__n_layers=2, max_epochs=12, lr=0.05, random_state=0, callbacks=[record]
    ).fit(X_train, y_train, sample_weight=weights)
    codes = np.searchsorted(model.classes_, y_train)
    for output, accuracy in zip(record.outputs, model.history[:, "train_eval_acc"]):
        correct = output.argmax(dim=1).numpy() == codes
        assert accuracy == pytest.approx(np.sum(weights * correct) / np.sum(weights))
    rows_right = np.round(np.asarray(model.history[:, "train_eval_acc"]) * len(X_train))
    chosen = _best_epoch(model.history, len(X_train))
    assert rows_right[chosen] == rows_right.max() > rows_right.min()
    _assert_same_output(model, X_train, record.outputs[chosen])

    regressor = NeuralNetRegressor(module__n_layers=2, max_epochs=4, random_state=0)
    regressor.fit(X_train, np.linspace(-1, 1, len(X_train)).astype(np.float32))
    assert "train_eval_acc" not in regressor.history[-1]


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
    # refreshes (as epochs 2-4 begin) stop before the default fraction's would
    assert refreshed_at == [2, 3, 4]
    # the best state comes back right after the last refresh, and again when training ends
    assert restored_at == [4, 10]


class _ParametersNotTrained(Callback):
    """As each epoch begins: the network's parameters that the optimizer does not hold."""

    def on_train_begin(self, net, **kwargs):
        self.missing = []

    def on_epoch_begin(self, net, **kwargs):
        held = {id(p) for group in net.optimizer_.param_groups for p in group["params"]}
        self.missing.append(
            [name for name, p in net.module_.named_parameters() if id(p) not in held]
        )


def test_the_optimizer_trains_every_parameter_after_the_best_state_comes_back(iris_split):
    """The restore as the fixed-mask epochs begin keeps the network's parameters, so the
    optimizer goes on training all of them (the activations' learned scales included)."""
    X_train, _, y_train, _ = iris_split
    record = _ParametersNotTrained()
    model = NeuralNetClassifier(
        module__n_layers=2, max_epochs=6, random_state=0, callbacks=[("record", record)]
    ).fit(X_train.astype(np.float32), y_train)
    assert record.missing == [[]] * 6
    scale = model.module_.act_quants[0].act_quant.fused_activation_quant_proxy
    assert scale.tensor_quant.scaling_impl.value.requires_grad


def test_with_a_validation_split_the_best_state_needs_no_pass_of_its_own(iris_split):
    """With a validation split, the state handed back is that of the lowest valid_loss, and
    each epoch runs the network on the training and validation rows once, nothing more."""
    X_train, _, y_train, _ = iris_split

    params = {
        "module__n_layers": 2,
        "max_epochs": 8,
        "lr": 0.05,
        "random_state": 0,
        "train_split": ValidSplit(4, stratified=True),
    }
    count = _CountRows()
    NeuralNetClassifier(callbacks=[count], **params).fit(X_train, y_train)
    assert count.per_epoch == [len(X_train)] * 8  # 84 training rows and 28 validation rows
    record = _RecordEpochs(X_train)
    spoiled = [record, _SpoilLastEpoch()]
    model = NeuralNetClassifier(callbacks=spoiled, **params).fit(X_train, y_train)
    valid_losses = model.history[:, "valid_loss"]
    assert int(np.argmin(valid_losses)) < 7  # the last epoch was not the best
    _assert_same_output(model, X_train, record.outputs[int(np.argmin(valid_losses))])


def test_without_a_split_the_evaluation_pass_is_bounded(iris_split, monkeypatch):
    """Without a validation split each epoch's network is measured on at most
    EVALUATION_ROWS training rows, spread over the set, so a large set costs a sample only."""
    monkeypatch.setattr(callbacks, "EVALUATION_ROWS", 30)
    X_train, _, y_train, _ = iris_split
    count = _CountRows()
    model = NeuralNetClassifier(
        module__n_layers=2, max_epochs=3, random_state=0, callbacks=[count]
    ).fit(X_train.astype(np.float32), y_train)
    assert count.per_epoch == [len(X_train) + 30] * 3
    assert len(model.history[:, "train_eval_loss"]) == 3


class _RecordLearningRates(Callback):
    """The optimizer's learning rates as each epoch begins, once the defaults have set them."""

    def on_train_begin(self, net, **kwargs):
        self.lrs = []

    def on_epoch_begin(self, net, **kwargs):
        self.lrs.append([group["lr"] for group in net.optimizer_.param_groups])


def _learning_rates(X, y, **params) -> np.ndarray:
    record = _RecordLearningRates()
    NeuralNetClassifier(
        module__n_layers=2,
        max_epochs=10,
        lr=0.01,
        random_state=0,
        callbacks=[("record", record), *params.pop("callbacks", [])],
        **params,
    ).fit(X.astype(np.float32), y)
    return np.array(record.lrs)


def test_learning_rate_anneals_while_the_masks_stay_fixed(iris_split):
    """lr while the masks are refreshed (epochs 0–4 of 10), then a half cosine towards 0 over
    the fixed-mask epochs, for every parameter group alike."""
    X_train, _, y_train, _ = iris_split
    lrs = _learning_rates(
        X_train,
        y_train,
        optimizer__param_groups=[("*scaling_impl.value", {"lr": 0.001})],
    )
    factors = lrs / lrs[0]
    np.testing.assert_allclose(factors[:6], 1.0)
    assert np.all(np.diff(factors[5:, 0]) < 0) and 0 < factors[-1, 0] < 0.1
    np.testing.assert_allclose(factors[:, 1:], factors[:, :1].repeat(lrs.shape[1] - 1, axis=1))


def test_a_users_scheduler_or_none_keeps_its_learning_rate(iris_split):
    """A user's LRScheduler takes over from the annealing; ``callbacks__annealed_learning_rate
    =None`` turns it off."""
    X_train, _, y_train, _ = iris_split
    scheduler = LRScheduler(policy="StepLR", step_size=100)
    for params in ({"callbacks": [("lr", scheduler)]}, {"callbacks__annealed_learning_rate": None}):
        lrs = _learning_rates(X_train, y_train, **params)
        # every epoch at the first epoch's rates: lr, and the hidden weights' limit below it
        np.testing.assert_allclose(lrs, np.repeat(lrs[:1], len(lrs), axis=0))
        assert lrs.max() == 0.01


@pytest.mark.parametrize("verbose", [0, 1])
def test_the_log_is_printed_as_skorchs_at_any_verbosity(iris_split, capsys, verbose):
    """The default ``print_log`` prints skorch's table with ``verbose=1`` and nothing at 0;
    a sink of the user's gets every row either way, as skorch's PrintLog gives it."""
    X_train, _, y_train, _ = iris_split
    params = {"module__n_layers": 2, "max_epochs": 3, "random_state": 0, "verbose": verbose}
    model = NeuralNetClassifier(**params).fit(X_train.astype(np.float32), y_train)
    assert isinstance(dict(model.callbacks_)["print_log"], callbacks.QuietPrintLog)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == (3 + 2 if verbose else 0)  # header, rule, one row per epoch
    rows = []
    NeuralNetClassifier(callbacks__print_log__sink=rows.append, **params).fit(
        X_train.astype(np.float32), y_train
    )
    assert len(rows) == 3 + 2 and capsys.readouterr().out == ""
