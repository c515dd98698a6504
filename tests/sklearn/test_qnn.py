"""NeuralNetClassifier / NeuralNetRegressor in scikit-learn workflows, clear and FHE."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_regression
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import qnn_sklearn
from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor
from qnn_sklearn.quantization.bounds import (
    AccumulatorOverflowError,
    check_certified_bits,
    signed_bits,
)

SMALL = {"module__n_layers": 2, "max_epochs": 30, "lr": 0.02, "random_state": 0}


def test_pipeline_with_string_labels(iris_split):
    X_train, X_test, y_train, y_test = iris_split
    pipeline = make_pipeline(StandardScaler(), NeuralNetClassifier(**SMALL))
    pipeline.fit(X_train, y_train)
    predictions = pipeline.predict(X_test)
    # each label is the class of the highest probability, decoded by the label encoder
    best_class = pipeline.predict_proba(X_test).argmax(axis=1)
    np.testing.assert_array_equal(predictions, pipeline[-1].classes_[best_class])
    # a sanity floor: this configuration scores 0.76-0.95 on these 38 rows over seeds 0-7
    # (mean 0.81, with the best state chosen on the eval-mode or on skorch's training loss)
    assert (predictions == y_test).mean() >= 0.75
    assert list(pipeline[-1].classes_) == ["setosa", "versicolor", "virginica"]


def test_grid_search_over_bits_and_width(iris_split):
    X_train, _, y_train, _ = iris_split
    search = GridSearchCV(
        NeuralNetClassifier(**SMALL),
        {"module__n_w_bits": [2, 3], "module__n_hidden_neurons_multiplier": [1, 2]},
        cv=2,
    ).fit(X_train, y_train)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_ == search.cv_results_["params"][int(np.argmax(scores))]
    # every candidate trained with its own settings: the scores are not all one model's
    assert len(set(np.round(search.cv_results_["split0_test_score"], 6))) > 1
    # the refitted estimator has the chosen bits and width, down to its integer weights
    best, params = search.best_estimator_, search.best_params_
    n_w_bits = params["module__n_w_bits"]
    assert best.module_.n_w_bits == n_w_bits
    assert best.module_.linears[0].in_features == 4
    assert max(best.module_.hidden_widths()) <= 4 * params["module__n_hidden_neurons_multiplier"]
    weights = [
        step.weight_t for step in best.quantized_module_.layer_steps if hasattr(step, "weight_t")
    ]
    # Brevitas scales the largest weight to the top level: 2^(n−1) − 1 or 2^(n−1)
    assert 2 ** (n_w_bits - 1) - 1 <= max(np.abs(w).max() for w in weights) <= 2 ** (n_w_bits - 1)
    # and it learned: better than always answering the most frequent class
    assert search.best_score_ > np.unique(y_train, return_counts=True)[1].max() / len(y_train)


def test_clone_keeps_parameters_and_drops_fit(iris_classifier):
    copy = clone(iris_classifier)
    assert copy.get_params()["module__n_layers"] == 2
    assert copy.get_params()["random_state"] == 0
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((1, 4)))


def test_same_seed_same_model(iris_split):
    X_train, X_test, y_train, _ = iris_split
    first = NeuralNetClassifier(**SMALL).fit(X_train, y_train)
    second = NeuralNetClassifier(**SMALL).fit(X_train, y_train)
    np.testing.assert_array_equal(first.predict_proba(X_test), second.predict_proba(X_test))


def test_dataframe_input_sets_feature_names(iris_split):
    X_train, X_test, y_train, _ = iris_split
    columns = [f"f{i}" for i in range(4)]
    model = NeuralNetClassifier(**SMALL).fit(pd.DataFrame(X_train, columns=columns), y_train)
    assert model.n_features_in_ == 4
    assert list(model.feature_names_in_) == columns
    from_frame = model.predict(pd.DataFrame(X_test, columns=columns))
    np.testing.assert_array_equal(from_frame, model.predict(X_test.astype(np.float32)))
    model.fit(X_train.tolist(), list(y_train))  # list-of-lists works too
    assert model.predict(X_test.tolist()).shape == (len(X_test),)


def test_torch_and_integer_models_agree(iris_classifier, iris_split):
    _, X_test, _, y_test = iris_split
    torch_labels = iris_classifier.forward(X_test.astype(np.float32)).argmax(1).numpy()
    integer_labels = iris_classifier.predict_proba(X_test).argmax(1)
    np.testing.assert_array_equal(torch_labels, integer_labels)
    # a sanity floor: this small configuration scores 0.79-0.95 on these 38 rows over seeds
    # 0-6 (default rounding, session 4)
    assert (iris_classifier.predict(X_test) == y_test).mean() >= 0.75


def test_simulation_equals_clear_on_extreme_inputs(iris_classifier):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)) * rng.uniform(1, 1e4, size=(300, 1))
    X[:16] = 1e4 * np.array([[(k >> j) & 1 and 1.0 or -1.0 for j in range(4)] for k in range(16)])
    module = iris_classifier.quantized_module_
    q = module.quantize_input(X)
    np.testing.assert_array_equal(
        module.quantized_forward(q, fhe="simulate"), module.quantized_forward(q)
    )
    np.testing.assert_array_equal(
        iris_classifier.predict(X, fhe="simulate"), iris_classifier.predict(X)
    )


def test_real_fhe_equals_clear(iris_classifier, iris_split):
    _, X_test, _, _ = iris_split
    rows = X_test[:2]
    np.testing.assert_array_equal(
        iris_classifier.predict_proba(rows, execute_in_fhe=True),
        iris_classifier.predict_proba(rows),
    )


def test_fhe_report_certifies_accumulators(iris_classifier):
    report = iris_classifier.fhe_report()
    assert report["max_certified_bits"] <= 8
    # the package's own check of the invariant holds on the trained model
    check_certified_bits(iris_classifier.quantized_module_.layers, 8)
    for layer in report["layers"]:
        assert signed_bits(*layer["certified_range"]) <= 8
    # 4 features on a 3-bit grid: tables on the packed 12-bit row would cost more
    assert report["program"] == "layered"
    assert report["lookups"] == [
        {
            "count": layer["pbs_count"],
            "precision": layer["pbs_precision"],
            "lsbs_to_remove": layer["lsbs_to_remove"],
        }
        for layer in report["layers"]
        if layer["pbs_count"]
    ]
    assert report["pbs_count"] == sum(layer["pbs_count"] for layer in report["layers"])
    # an exact rounding costs one bootstrap per removed bit, before the lookup's own
    assert report["circuit_pbs_count"] == sum(
        lookup["count"] * (1 + lookup["lsbs_to_remove"]) for lookup in report["lookups"]
    )


def test_pickle_round_trip_rebuilds_the_circuit(iris_classifier, iris_split):
    _, X_test, _, _ = iris_split
    restored = pickle.loads(pickle.dumps(iris_classifier))
    np.testing.assert_array_equal(restored.predict(X_test), iris_classifier.predict(X_test))
    np.testing.assert_array_equal(
        restored.predict(X_test[:20], fhe="simulate"), iris_classifier.predict(X_test[:20])
    )


def test_regressor_fits_make_regression():
    X, y = make_regression(n_samples=600, n_features=8, noise=5, random_state=0)
    y = (y - y.mean()) / y.std()
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    model = NeuralNetRegressor(
        module__n_layers=2, module__n_a_bits=4, max_epochs=30, lr=0.01, random_state=0
    ).fit(scaler.transform(X_train), y_train)
    predictions = model.predict(scaler.transform(X_test))
    assert predictions.shape == y_test.shape
    assert r2_score(y_test, predictions) > 0.5
    two_targets = model.fit(scaler.transform(X_train), np.c_[y_train, -y_train])
    assert two_targets.predict(scaler.transform(X_test)).shape == (len(X_test), 2)


def test_prune_returns_a_smaller_fitted_copy(iris_classifier, iris_split):
    X_train, X_test, y_train, _ = iris_split
    pruned = iris_classifier.prune(X_train, y_train, 0.5)
    assert pruned is not iris_classifier
    widths, original = pruned.module_.hidden_widths(), iris_classifier.module_.hidden_widths()
    # structured pruning removes round(50%) of the neurons the network had, no more, no less
    assert widths[0] == original[0] - round(0.5 * original[0])
    assert pruned.predict(X_test).shape == (len(X_test),)
    assert pruned.quantized_module_.bitwidth_report()[0]["neurons"] == widths[0]
    restored = pickle.loads(pickle.dumps(pruned))
    assert restored.module_.n_prune_neurons_percentage == 0.5
    np.testing.assert_array_equal(restored.predict_proba(X_test), pruned.predict_proba(X_test))


class TestErrors:
    def test_predict_before_fit(self):
        with pytest.raises(NotFittedError):
            NeuralNetClassifier().predict(np.zeros((2, 4)))

    def test_fhe_before_compile(self, iris_split):
        X_train, X_test, y_train, _ = iris_split
        model = NeuralNetClassifier(**SMALL).fit(X_train, y_train)
        with pytest.raises(RuntimeError, match="compile"):
            model.predict(X_test, fhe="simulate")
        with pytest.raises(RuntimeError, match="compile"):
            model.predict(X_test, execute_in_fhe=True)

    @pytest.mark.parametrize(
        "X, message",
        [
            (np.full((3, 4), np.nan), "NaN"),
            (np.full((3, 4), np.inf), "infinity"),
            (np.zeros((3, 5)), "features"),
            (np.zeros((0, 4)), "0 sample"),
        ],
    )
    def test_bad_inputs_at_predict(self, iris_classifier, X, message):
        with pytest.raises(ValueError, match=message):
            iris_classifier.predict(X)

    def test_invalid_bits_raise_at_fit_not_construction(self, iris_split):
        X_train, _, y_train, _ = iris_split
        model = NeuralNetClassifier(module__n_w_bits=0, **SMALL)
        with pytest.raises(ValueError, match="n_w_bits"):
            model.fit(X_train, y_train)

    @pytest.mark.parametrize(
        "kwargs", [{"p_error": 2.0}, {"p_error": -1.0}, {"global_p_error": 5.0}], ids=repr
    )
    def test_error_probabilities_outside_zero_one(self, iris_classifier, iris_split, kwargs):
        circuit = iris_classifier.fhe_circuit_
        (name,) = kwargs
        with pytest.raises(ValueError, match=rf"^{name} is a probability.*\(0, 1\)"):
            iris_classifier.compile(iris_split[0], **kwargs)
        assert iris_classifier.fhe_circuit_ is circuit

    def test_invalid_fhe_mode(self, iris_classifier):
        with pytest.raises(ValueError, match="fhe must be one of"):
            iris_classifier.predict(np.zeros((1, 4)), fhe="gpu")


def _assert_every_path_agrees(model, X_train, X_test, configuration):
    """The Brevitas forward equals the integer model on the test rows; once compiled,
    simulation equals it on inputs 100σ out and real FHE on one test and one extreme row."""
    torch_labels = model.forward(X_test.astype(np.float32)).argmax(1).numpy()
    np.testing.assert_array_equal(torch_labels, model.predict_proba(X_test).argmax(1))
    model.compile(X_train, configuration=configuration)
    X_extreme = np.random.default_rng(0).normal(size=(300, X_train.shape[1])) * 100
    np.testing.assert_array_equal(
        model.predict(X_extreme, fhe="simulate"), model.predict(X_extreme)
    )
    rows = np.concatenate([X_test[:1], X_extreme[:1]])
    np.testing.assert_array_equal(
        model.predict_proba(rows, fhe="execute"), model.predict_proba(rows)
    )


def test_trained_rounding_is_what_fhe_computes(
    iris_split, fit_classifier, insecure_fhe_configuration
):
    """With rounding_threshold_bits the network trains with the rounding: its Brevitas forward,
    the integer model, simulation (on extreme inputs too) and FHE give the same answers, and
    every lookup is at most that wide."""
    X_train, X_test, y_train, _ = iris_split
    model = fit_classifier(
        X_train,
        y_train,
        module__n_layers=2,
        module__n_hidden_neurons_multiplier=2,
        rounding_threshold_bits=3,
        max_epochs=40,
    )
    assert model.module_.rounding_threshold_bits == 3
    layers = model.fhe_report()["layers"]
    assert layers[0]["lsbs_to_remove"] > 0 and layers[0]["pbs_precision"] <= 3
    _assert_every_path_agrees(model, X_train, X_test, insecure_fhe_configuration)


def test_linear_network_runs_in_fhe_without_bootstrapping(
    iris_split, fit_classifier, insecure_fhe_configuration
):
    """n_layers=1 is a quantized linear model (the benchmark's choice on its sklearn tasks): no
    hidden layer, so no lookup; FHE still equals the integer model, whose certified
    accumulator covers any input."""
    X_train, X_test, y_train, _ = iris_split
    bits = {"module__n_w_bits": 4, "module__n_a_bits": 4, "module__n_accum_bits": 14}
    model = fit_classifier(X_train, y_train, module__n_layers=1, max_epochs=40, **bits)
    assert model.fhe_report()["pbs_count"] == 0
    _assert_every_path_agrees(model, X_train, X_test, insecure_fhe_configuration)
    assert model.fhe_report()["circuit_pbs_count"] == 0


def test_two_feature_network_runs_as_one_table_per_class(
    fit_classifier, insecure_fhe_configuration
):
    """Two features on a 2-bit input grid make 16 possible rows: the circuit reads each class
    score from one table on the packed row (two bootstraps in all, at 4 bits) instead of
    running the hidden layers, and every path still agrees with the integer model."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(600, 2))
    y = (np.rint(X[:, 0]) != np.rint(X[:, 1])).astype(int)  # XOR of the two halves
    grid = {"module__n_a_bits": 2, "module__n_input_bits": 2, "module__quant_signed": False}
    model = fit_classifier(X[:500], y[:500], module__n_layers=3, max_epochs=30, **grid)
    report = model.fhe_report()
    assert report["program"] == "tabulated"
    assert report["lookups"] == [{"count": 2, "precision": 4, "lsbs_to_remove": 0}]
    # what the layered program would bootstrap: one lookup per hidden neuron
    assert sum(layer["pbs_count"] for layer in report["layers"]) == sum(
        model.module_.hidden_widths()
    )
    _assert_every_path_agrees(model, X[:500], X[500:], insecure_fhe_configuration)
    assert model.fhe_report()["circuit_pbs_count"] == 2


def test_weights_past_the_budget_are_refused(iris_classifier):
    """Weights tampered with after pruning (every weight of the 16-input output layer at the
    top 3-bit level: 16 · 3 · 7 = 336 > 127) fail the certified-bits check on import."""
    buffer = io.BytesIO()
    iris_classifier.dump(buffer)
    tampered = qnn_sklearn.load(io.BytesIO(buffer.getvalue()))
    last = tampered.module_.linears[-1]
    with torch.no_grad():
        last.weight.fill_(1.0)
    buffer = io.BytesIO()
    tampered.dump(buffer)
    with pytest.raises(AccumulatorOverflowError, match="n_accum_bits=8"):
        qnn_sklearn.load(io.BytesIO(buffer.getvalue()))
