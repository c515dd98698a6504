"""What skorch and scikit-learn users reach for: a validation split, EarlyStopping, LRScheduler,
Checkpoint and load_params, sample_weight, class_weight, sparse X, partial_fit(classes=)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from skorch.callbacks import Checkpoint, EarlyStopping, EpochScoring, LRScheduler
from skorch.dataset import ValidSplit

from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor
from qnn_sklearn.sklearn import dense_rows

SMALL = {"module__n_layers": 2, "lr": 0.02, "random_state": 0}


def _regression_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    return X, X @ np.array([1.0, -0.5, 0.25], dtype=np.float32)


# -- validation split --------------------------------------------------------------------------


def test_valid_acc_scores_the_network_being_trained_with_string_labels(iris_split):
    X_train, X_test, y_train, y_test = iris_split
    model = NeuralNetClassifier(
        max_epochs=12, train_split=ValidSplit(4, stratified=True), **SMALL
    ).fit(X_train, y_train)
    valid_acc = model.history[:, "valid_acc"]
    assert len(valid_acc) == 12
    # the encoded targets and the predicted class indices agree: far better than chance
    assert max(valid_acc) >= 0.7
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    assert set(model.predict(X_test)) <= set(y_test)  # after fit: labels, integer model


def test_regressor_validation_split_with_a_scorer():
    X, y = _regression_data()
    model = NeuralNetRegressor(
        max_epochs=8, train_split=ValidSplit(4), callbacks=[EpochScoring("r2")], **SMALL
    ).fit(X, y)
    assert len(model.history[:, "valid_loss"]) == 8
    assert model.history[-1, "r2"] > 0.5
    assert model.predict(X).shape == (len(X),)


# -- EarlyStopping, LRScheduler, Checkpoint ----------------------------------------------------


def test_early_stopping_scheduler_and_checkpoint_reload_predict_identically(iris_split, tmp_path):
    X_train, X_test, y_train, _ = iris_split
    checkpoint = Checkpoint(dirname=str(tmp_path), monitor="valid_loss_best")
    params = {**SMALL, "train_split": ValidSplit(4, stratified=True)}
    model = NeuralNetClassifier(
        max_epochs=100,
        callbacks=[
            checkpoint,
            EarlyStopping(patience=3),
            LRScheduler(policy="StepLR", step_size=2, gamma=0.5),
        ],
        **params,
    ).fit(X_train, y_train)
    assert len(model.history) < 100  # early stopping stopped it
    assert model.optimizer_.param_groups[0]["lr"] < SMALL["lr"]  # the scheduler ran
    # the estimator ends with the state Checkpoint saved (lowest valid_loss); a fresh estimator
    # loads it and predicts what the fitted one does
    fresh = NeuralNetClassifier(
        module__input_dim=4, module__n_outputs=3, classes=list(model.classes_), **params
    ).initialize()
    fresh.load_params(checkpoint=checkpoint)
    np.testing.assert_array_equal(fresh.predict_proba(X_test), model.predict_proba(X_test))
    np.testing.assert_array_equal(fresh.predict(X_test), model.predict(X_test))
    # and so does the fitted one after loading it back
    expected = model.predict_proba(X_test)
    model.load_params(checkpoint=checkpoint)
    np.testing.assert_array_equal(model.predict_proba(X_test), expected)


def test_params_saved_after_fit_load_into_a_fresh_regressor(tmp_path):
    X, y = _regression_data()
    model = NeuralNetRegressor(max_epochs=4, **SMALL).fit(X, y)
    model.save_params(f_params=str(tmp_path / "params.pt"))
    fresh = NeuralNetRegressor(module__input_dim=3, module__n_outputs=1, **SMALL).initialize()
    fresh.load_params(f_params=str(tmp_path / "params.pt"))
    np.testing.assert_array_equal(fresh.predict(X), model.predict(X))


def test_initialize_before_fit_names_the_sizes_it_needs():
    with pytest.raises(AttributeError, match="module__input_dim and module__n_outputs"):
        NeuralNetClassifier().initialize()


# -- sample_weight and class_weight ------------------------------------------------------------


def _contradicting_copies(X, y):
    """Every row twice: once with its label, once with another class's."""
    return np.concatenate([X, X]), np.concatenate([y, (y + 1) % 3])


def test_rows_of_weight_zero_are_ignored(iris_split):
    X_train, X_test, y_train, y_test = iris_split
    codes = np.searchsorted(["setosa", "versicolor", "virginica"], y_train)
    X_both, y_both = _contradicting_copies(X_train, codes)
    first = np.r_[np.ones(len(X_train)), np.zeros(len(X_train))]
    params = {**SMALL, "max_epochs": 30}
    on_true = NeuralNetClassifier(**params).fit(X_both, y_both, sample_weight=first)
    on_shifted = NeuralNetClassifier(**params).fit(X_both, y_both, sample_weight=1 - first)
    alone = NeuralNetClassifier(**params).fit(X_train, codes)
    # the weighted model follows the rows that count, as the model trained on them alone does
    assert (on_true.predict(X_train) == codes).mean() >= 0.8
    assert (on_shifted.predict(X_train) == (codes + 1) % 3).mean() >= 0.8
    # two 3-bit models of iris agree on 0.84-0.95 of its 38 test rows (seeds 0-2); a model
    # that learned from the contradicting rows too would be near chance
    test_codes = np.searchsorted(["setosa", "versicolor", "virginica"], y_test)
    assert (on_true.predict(X_test) == alone.predict(X_test)).mean() >= 0.8
    assert (on_true.predict(X_test) == test_codes).mean() >= (
        alone.predict(X_test) == test_codes
    ).mean() - 0.1


def test_sample_weight_in_regression_and_partial_fit():
    X, y = _regression_data()
    y_shifted = y + 3.0
    X_both, y_both = np.concatenate([X, X]), np.concatenate([y, y_shifted])
    first = np.r_[np.ones(len(X)), np.zeros(len(X))]
    model = NeuralNetRegressor(max_epochs=15, **SMALL).fit(X_both, y_both, sample_weight=first)
    error_true = np.abs(model.predict(X) - y).mean()
    assert error_true < 0.5 < np.abs(model.predict(X) - y_shifted).mean()
    # partial_fit on the shifted rows only moves the predictions towards them
    model.partial_fit(X_both, y_both, sample_weight=1 - first)
    assert np.abs(model.predict(X) - y_shifted).mean() < np.abs(model.predict(X) - y).mean()


@pytest.mark.parametrize(
    "sample_weight, message",
    [
        (np.ones(5), "one weight per row"),
        (-np.ones(112), ">= 0"),
        (np.full(112, np.nan), "NaN"),
        (np.zeros(112), "weight is zero"),
    ],
)
def test_invalid_sample_weight(iris_split, sample_weight, message):
    X_train, _, y_train, _ = iris_split
    with pytest.raises(ValueError, match=message):
        NeuralNetClassifier(max_epochs=1).fit(X_train, y_train, sample_weight=sample_weight)


class _MeanOnlyLoss(torch.nn.Module):
    """A user's criterion that always averages (it takes no ``reduction``)."""

    def forward(self, output, target):
        return torch.nn.functional.cross_entropy(output, target)


def test_a_criterion_without_reduction_trains_but_refuses_row_weights(iris_split):
    X_train, _, y_train, _ = iris_split
    model = NeuralNetClassifier(criterion=_MeanOnlyLoss, max_epochs=2, **SMALL)
    model.fit(X_train, y_train)
    assert np.isfinite(model.history[-1, "train_loss"])
    weights = np.where(y_train == y_train[0], 2.0, 1.0)
    with pytest.raises(ValueError, match="reduction='none'"):
        model.fit(X_train, y_train, sample_weight=weights)


def test_balanced_class_weight_raises_the_minority_recall():
    X, y = make_classification(
        n_samples=800, n_features=6, weights=[0.9, 0.1], class_sep=0.6, random_state=0
    )
    X = StandardScaler().fit_transform(X)
    labels = np.array(["common", "rare"])[y]
    params = {**SMALL, "max_epochs": 10}
    recalls = {
        str(weight): recall_score(
            labels,
            NeuralNetClassifier(class_weight=weight, **params).fit(X, labels).predict(X),
            pos_label="rare",
        )
        for weight in (None, "balanced", {"rare": 9.0})
    }
    assert recalls["balanced"] > recalls["None"] + 0.2
    assert recalls[str({"rare": 9.0})] > recalls["None"] + 0.2


@pytest.mark.parametrize(
    "class_weight, message",
    [
        ({"no such label": 2.0}, "not a class"),
        ({"setosa": -1.0}, ">= 0"),
        ("heavy", "balanced"),
    ],
)
def test_invalid_class_weight_raises_in_fit(iris_split, class_weight, message):
    X_train, _, y_train, _ = iris_split
    model = NeuralNetClassifier(class_weight=class_weight, max_epochs=1)
    assert model.get_params()["class_weight"] is class_weight  # stored as given
    with pytest.raises(ValueError, match=message):
        model.fit(X_train, y_train)


# -- sparse X ----------------------------------------------------------------------------------


def test_sparse_X_gives_what_dense_X_gives(iris_split, insecure_fhe_configuration):
    X_train, X_test, y_train, _ = iris_split
    params = {**SMALL, "max_epochs": 5}
    dense = NeuralNetClassifier(**params).fit(X_train, y_train)
    from_sparse = NeuralNetClassifier(**params).fit(sparse.csr_matrix(X_train), y_train)
    np.testing.assert_array_equal(
        from_sparse.predict_proba(sparse.csr_matrix(X_test)), dense.predict_proba(X_test)
    )
    from_sparse.compile(sparse.csr_matrix(X_train), configuration=insecure_fhe_configuration)
    np.testing.assert_array_equal(
        from_sparse.predict(sparse.csr_matrix(X_test[:5]), fhe="simulate"),
        dense.predict(X_test[:5]),
    )


def test_one_hot_columns_from_a_column_transformer():
    rng = np.random.default_rng(0)
    colors = rng.choice(["red", "green", "blue"], size=150)
    X = np.c_[colors, rng.normal(size=150)].astype(object)
    y = (colors == "red").astype(int)
    columns = ColumnTransformer(
        [("color", OneHotEncoder(), [0]), ("value", StandardScaler(), [1])],
        sparse_threshold=1.0,
    )
    assert sparse.issparse(columns.fit_transform(X))
    pipeline = make_pipeline(columns, NeuralNetClassifier(max_epochs=15, **SMALL)).fit(X, y)
    assert (pipeline.predict(X) == y).mean() >= 0.9


def test_densifying_a_large_sparse_X_warns(iris_split, monkeypatch):
    X_train, _, y_train, _ = iris_split
    monkeypatch.setattr(dense_rows, "DENSIFY_WARNING_BYTES", 100)
    with pytest.warns(UserWarning, match="makes it dense"):
        NeuralNetClassifier(max_epochs=1).fit(sparse.csr_matrix(X_train), y_train)


# -- partial_fit(classes=) ---------------------------------------------------------------------


def test_partial_fit_classes_fixes_the_label_set(iris_split):
    X_train, X_test, y_train, _ = iris_split
    without_virginica = y_train != "virginica"
    model = NeuralNetClassifier(max_epochs=3, **SMALL)
    model.partial_fit(
        X_train[without_virginica],
        y_train[without_virginica],
        classes=["setosa", "versicolor", "virginica"],
    )
    assert model.predict_proba(X_test).shape == (len(X_test), 3)
    model.partial_fit(X_train, y_train)  # now with virginica
    assert model.predict_proba(X_test).shape == (len(X_test), 3)
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    with pytest.raises(ValueError, match="not among the classes"):
        model.partial_fit(X_train[:3], ["setosa", "versicolor", "rose"])
    with pytest.raises(ValueError, match="differs from the classes"):
        model.partial_fit(X_train, y_train, classes=["setosa", "versicolor"])


def test_partial_fit_without_classes_takes_them_from_y(iris_split):
    X_train, _, y_train, _ = iris_split
    model = NeuralNetClassifier(max_epochs=2, **SMALL).partial_fit(X_train, y_train)
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    assert model.module_.linears[-1].out_features == 3
    torch.testing.assert_close(
        torch.as_tensor(model.predict_proba(X_train).sum(axis=1)),
        torch.ones(len(X_train), dtype=torch.float64),
    )


def test_partial_fit_keeps_the_default_pruning_of_wide_inputs():
    """On more than 24 features the default prunes 60% of the hidden neurons, once: a later
    partial_fit trains the pruned network on, it does not prune it again."""
    X, y = make_classification(300, n_features=30, n_informative=10, random_state=0)
    model = NeuralNetClassifier(
        max_epochs=2, module__n_hidden_neurons_multiplier=1, **SMALL
    ).partial_fit(X, y)
    (first,) = model.module_.hidden_widths()
    assert first <= 12
    model.partial_fit(X, y)
    assert model.module_.hidden_widths() == [first]
