"""FHEModelSearchCV: sklearn's search conventions, the latency budget, the front, the cost cache.

Searches run on iris (112 rows), 2 epochs, 2 folds, simulation only, priced with a fixed table
(the reference machine's, from cost_model.py) so that nothing is measured here.
"""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np
import pytest
from distributed import Client
from joblib import parallel_backend
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from qnn_sklearn import FHEModelSearchCV, NeuralNetClassifier
from qnn_sklearn.quantization import machine_costs as cache
from qnn_sklearn.quantization import pbs_timing
from qnn_sklearn.quantization.cost_model import LOOKUP_COST_MS, ROUND_COST_MS_PER_BIT
from qnn_sklearn.quantization.machine_costs import MachineCosts, machine_key, read_machine_costs
from qnn_sklearn.search.latency_model import pbs_count, predicted_latency_s
from qnn_sklearn.search.selection import pareto_front, select_candidate

matplotlib.use("Agg")

COSTS = MachineCosts(
    lookup_s=tuple(ms / 1e3 for ms in LOOKUP_COST_MS),
    round_s_per_bit=ROUND_COST_MS_PER_BIT / 1e3,
    call_overhead_s=(0.005, *[0.045] * len(LOOKUP_COST_MS)),
    key=machine_key(),
)
GRID = {"module__n_layers": [1, 2], "module__n_hidden_neurons_multiplier": [1]}


def small_classifier(**params) -> NeuralNetClassifier:
    return NeuralNetClassifier(max_epochs=2, lr=0.02, random_state=0, **params)


def search(**params) -> FHEModelSearchCV:
    return FHEModelSearchCV(small_classifier(), GRID, **{"cv": 2, "machine_costs": COSTS, **params})


@pytest.fixture(scope="module")
def budget_search(iris_split):
    """Linear against one hidden layer, in 2 joblib workers, with a budget only the linear
    model meets (its circuit has no bootstrap: one call's fixed cost)."""
    X_train, _, y_train, _ = iris_split
    return search(max_latency_s=0.02, n_jobs=2).fit(X_train, y_train)


# -- sklearn's conventions -----------------------------------------------------------------------


def test_constructor_stores_parameters_and_clones():
    estimator = search(max_latency_s=-1.0, scoring="accuracy")
    assert estimator.max_latency_s == -1.0  # stored as given, refused in fit
    twin = clone(estimator)
    assert twin.get_params(deep=False).keys() == estimator.get_params(deep=False).keys()
    assert twin.get_params()["estimator__max_epochs"] == 2
    assert (
        twin.set_params(max_latency_s=0.5, estimator__lr=0.1).get_params()["estimator__lr"] == 0.1
    )


class _RefusesTraining(NeuralNetClassifier):
    def fit(self, X, y, **params):
        raise AssertionError("trained before the settings were checked")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_latency_s": -1.0}, "max_latency_s"),
        ({"max_latency_s": "fast"}, "max_latency_s"),
        ({"max_latency_s": 1.0, "min_score": 0.9}, "not both"),
        ({"min_score": float("nan")}, "min_score"),
        ({"refit": "score"}, "refit"),
        ({"refit": lambda results: 0, "max_latency_s": 1.0}, "callable refit"),
        ({"scoring": ["accuracy", "f1"]}, "one metric"),
        ({"estimator": LogisticRegression()}, "NeuralNetClassifier or NeuralNetRegressor"),
    ],
)
def test_settings_are_checked_before_training(iris_split, params, message):
    X_train, _, y_train, _ = iris_split
    estimator = FHEModelSearchCV(
        _RefusesTraining(max_epochs=1), GRID, cv=2, machine_costs=COSTS, error_score="raise"
    ).set_params(**params)
    with pytest.raises(ValueError, match=message):
        estimator.fit(X_train, y_train)


def test_cv_results_carry_score_and_price(budget_search):
    results = budget_search.cv_results_
    layers = list(results["param_module__n_layers"])
    linear, hidden = layers.index(1), layers.index(2)
    assert results["pbs_count"][linear] == 0 and results["pbs_count"][hidden] > 0
    assert results["predicted_latency_s"][linear] == pytest.approx(COSTS.call_overhead_s[0])
    assert results["predicted_latency_s"][hidden] > 0.045 + results["pbs_count"][hidden] * 4e-3
    for column in ("mean_test_score", "rank_test_score", "split1_predicted_latency_s"):
        assert len(results[column]) == 2
    assert not any(key.startswith("rank_test_pbs") or "test_predicted" in key for key in results)


def test_budget_is_respected_by_the_compiled_best_circuit(budget_search, iris_split):
    X_train, X_test, _, _ = iris_split
    best = budget_search.best_estimator_
    assert budget_search.best_params_["module__n_layers"] == 1
    module = best.quantized_module_
    assert module.is_compiled
    assert best.fhe_circuit_.programmable_bootstrap_count == pbs_count(module)
    assert predicted_latency_s(module, COSTS) == budget_search.best_predicted_latency_s_
    assert budget_search.best_predicted_latency_s_ <= budget_search.max_latency_s
    assert np.array_equal(best.predict(X_test, fhe="simulate"), budget_search.predict(X_test))


def test_without_refit_the_budget_still_chooses(iris_split):
    X_train, _, y_train, _ = iris_split
    fitted = search(refit=False, max_latency_s=0.02).fit(X_train, y_train)
    assert fitted.best_params_["module__n_layers"] == 1
    assert fitted.best_score_ == fitted.cv_results_["mean_test_score"][fitted.best_index_]
    assert not hasattr(fitted, "best_estimator_")


def test_latency_comes_from_the_circuits_bootstraps(iris_split):
    """A hidden layer's price is its layer reports' lookups and removed bits, which are the
    compiled circuit's bootstraps."""
    X_train, _, y_train, _ = iris_split
    model = small_classifier(module__n_layers=2, module__n_hidden_neurons_multiplier=1)
    model.fit(X_train, y_train).compile(X_train)
    report = [layer for layer in model.fhe_report()["layers"] if layer["pbs_count"]]
    assert report
    expected = COSTS.call_overhead_at(max(layer["pbs_precision"] for layer in report)) + sum(
        layer["pbs_count"]
        * (
            COSTS.lookup_at(layer["pbs_precision"])
            + layer["lsbs_to_remove"] * COSTS.round_s_per_bit
        )
        for layer in report
    )
    assert predicted_latency_s(model.quantized_module_, COSTS) == pytest.approx(expected)
    count = sum(layer["pbs_count"] * (1 + layer["lsbs_to_remove"]) for layer in report)
    assert pbs_count(model.quantized_module_) == count
    assert model.fhe_circuit_.programmable_bootstrap_count == count


def test_no_candidate_within_budget_names_cheapest_and_best(iris_split):
    X_train, _, y_train, _ = iris_split
    estimator = search(max_latency_s=1e-4).set_params(param_distributions={"module__n_layers": [1]})
    with pytest.raises(ValueError, match=r"cheapest predicted latency found is 0\.005 s"):
        estimator.fit(X_train, y_train)


def test_pipeline_nested_in_cross_validate_under_dask(iris_split):
    """The search is an estimator like any other (cross_validate clones, fits and scores it),
    it searches a Pipeline ending in our model, and its folds run on Dask through joblib."""
    X_train, _, y_train, _ = iris_split
    pipeline = make_pipeline(StandardScaler(), small_classifier())
    estimator = FHEModelSearchCV(
        pipeline,
        {"neuralnetclassifier__module__n_layers": [1]},
        n_iter=1,
        cv=2,
        machine_costs=COSTS,
        n_jobs=2,
    )
    # one task at a time per process: Brevitas' ONNX export (in every fit) is not thread-safe
    with Client(processes=False, n_workers=1, threads_per_worker=1):
        with parallel_backend("dask"):
            outer = cross_validate(estimator, X_train, y_train, cv=2, return_estimator=True)
    assert np.all((0 <= outer["test_score"]) & (outer["test_score"] <= 1))
    for fitted in outer["estimator"]:
        assert fitted.best_estimator_[-1].quantized_module_.is_compiled  # on scaled rows
        assert fitted.best_predicted_latency_s_ == COSTS.call_overhead_s[0]


# -- choosing and the front ------------------------------------------------------------------


def test_selection_by_budget_or_score_floor():
    scores = [0.90, 0.95, 0.95, 0.80, np.nan]
    latencies = [1.0, 5.0, 4.0, 0.1, 0.01]
    assert select_candidate(scores, latencies) == 2  # most accurate, the cheaper of the tie
    assert select_candidate(scores, latencies, max_latency_s=3.0) == 0
    assert select_candidate(scores, latencies, min_score=0.85) == 0  # cheapest reaching it
    with pytest.raises(ValueError, match=r"0\.1 s per row and the best score 0\.95"):
        select_candidate(scores, latencies, max_latency_s=0.05)


def test_pareto_front_on_synthetic_results():
    scores = np.array([0.90, 0.95, 0.85, 0.95, 0.80, np.nan, 0.90])
    latencies = np.array([1.0, 5.0, 2.0, 6.0, 0.1, 0.01, 1.0])
    # 2 is beaten by 0, 3 by 1, 5 failed; 0 and 6 are the same point and both stay
    assert pareto_front(scores, latencies).tolist() == [4, 0, 6, 1]


def test_plot_front_draws_every_candidate_and_the_reference(budget_search):
    reference = {"latency_s": 0.5, "score": 0.8, "label": "Concrete ML default"}
    ax = budget_search.plot_front(reference=reference)
    results = budget_search.cv_results_
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    for latency, score in zip(results["predicted_latency_s"], results["mean_test_score"]):
        assert np.any(np.all(np.isclose(points, [latency, score]), axis=1))
    assert np.any(np.all(np.isclose(points, [0.5, 0.8]), axis=1))
    front_line = ax.lines[0].get_xydata()
    assert len(front_line) == len(budget_search.pareto_front_)
    assert "Concrete ML default" in [text.get_text() for text in ax.get_legend().get_texts()]


# -- the cost table's cache ----------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_DIR_VARIABLE, str(tmp_path))

    def no_measuring(**kwargs):
        raise AssertionError("measured although a cache file exists")

    monkeypatch.setattr(pbs_timing, "measure_machine_costs", no_measuring)
    return tmp_path


def test_cache_round_trip_is_used_without_measuring(cache_dir):
    cache.write_machine_costs(COSTS, cache.cache_path())
    assert pbs_timing.cached_machine_costs() == COSTS
    assert os.listdir(cache_dir) == [cache.cache_path().name]


VALID = COSTS.to_json()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "Expecting"),
        (b"\x80\x04\x95pickle", "utf-8"),
        (b"[" * 100_000 + b"]" * 100_000, "larger than"),
        (b" " * (cache.MAX_COST_FILE_BYTES + 1), "larger than"),
        (b"[" * 20_000 + b"]" * 20_000, "recursion"),
        (json.dumps({**VALID, "lookup_s": [1e-3, float("nan")]}).encode(), "NaN"),
        (json.dumps({**VALID, "lookup_s": [-1.0]}).encode(), r"lookup_s\[0\]"),
        (json.dumps({**VALID, "lookup_s": [1e-3] * 100}).encode(), "lookup_s"),
        (json.dumps({**VALID, "round_s_per_bit": "0.001"}).encode(), "round_s_per_bit"),
        (json.dumps({**VALID, "call_overhead_s": [0.01]}).encode(), "call_overhead_s"),
        (json.dumps({**VALID, "extra": 1}).encode(), "fields"),
        (json.dumps({**VALID, "key": {**VALID["key"], "cores": 999}}).encode(), "not this"),
    ],
)
def test_hostile_or_corrupt_cache_is_refused(cache_dir, content, reason):
    path = cache.cache_path()
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as refused:
        pbs_timing.cached_machine_costs()
    assert str(path) in str(refused.value) and "Delete the file" in str(refused.value)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_cache_that_is_not_a_regular_file_is_refused(cache_dir, kind):
    path = cache.cache_path()
    if kind == "symlink":
        os.symlink("/dev/zero", path)
    else:
        os.mkfifo(path)  # opening it for reading must not wait for a writer
    with pytest.raises(ValueError, match="Refused"):
        read_machine_costs(path)


def test_timing_circuit_is_a_rounded_layer_that_decrypts_right():
    """The measuring method's circuit: a dot product, one removed bit, a 1-bit lookup, per
    neuron (two bootstraps each), checked against the clear function."""
    row = pbs_timing.time_lookups(1, 2, runs=1, lsbs_to_remove=1, fan_in=4, round_trip=True)
    assert row["correct"] and row["pbs_count"] == 2 * (1 + 1)
    with pytest.raises(ValueError, match="without gaps"):
        pbs_timing.measure_machine_costs(precisions=[1, 3])
