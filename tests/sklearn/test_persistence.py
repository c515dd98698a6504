"""dump / load: a fitted estimator round-trips through a zip of JSON and .npy, with no pickle."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

import qnn_sklearn
from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor
from qnn_sklearn.quantization import CompileOptions
from qnn_sklearn.sklearn.saving import FORMAT_VERSION, MANIFEST

TINY = {"module__n_layers": 2, "module__n_hidden_neurons_multiplier": 2, "max_epochs": 3}


@pytest.fixture(scope="module")
def data():
    X = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    return X, X[:, 0] + X[:, 1] > 0


@pytest.fixture(scope="module")
def classifier(data):
    X, positive = data
    y = np.where(positive, "yes", "no")
    return NeuralNetClassifier(random_state=0, lr=0.02, **TINY).fit(X, y)


def _round_trip(estimator, to: str = "bytes"):
    if to == "bytes":
        buffer = io.BytesIO()
        estimator.dump(buffer)
        buffer.seek(0)
        return qnn_sklearn.load(buffer)
    estimator.dump(to)
    return qnn_sklearn.load(to)


def _public_params(estimator) -> dict:
    return {k: v for k, v in estimator.get_params(deep=False).items() if not k.startswith("_")}


def _dumped(estimator) -> bytes:
    buffer = io.BytesIO()
    estimator.dump(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("to", ["bytes", "path"])
def test_classifier_round_trip(classifier, data, to, tmp_path):
    X, _ = data
    loaded = _round_trip(classifier, "bytes" if to == "bytes" else tmp_path / "model.zip")
    assert type(loaded) is NeuralNetClassifier
    assert np.array_equal(loaded.predict(X), classifier.predict(X))
    assert np.array_equal(loaded.predict_proba(X), classifier.predict_proba(X))
    assert loaded.classes_.dtype == classifier.classes_.dtype
    assert np.array_equal(loaded.classes_, classifier.classes_)
    assert loaded.n_features_in_ == 3 and loaded.n_outputs_ == 2
    assert _public_params(loaded) == _public_params(classifier)


@pytest.mark.parametrize(
    "labels", [np.array([3, 7]), np.array([-1.0, 2.0], dtype=np.float32), np.array([False, True])]
)
def test_label_types_keep_their_dtype(data, labels):
    X, positive = data
    model = NeuralNetClassifier(random_state=0, **TINY).fit(X, labels[positive.astype(int)])
    loaded = _round_trip(model)
    assert loaded.predict(X).dtype == model.predict(X).dtype
    assert np.array_equal(loaded.predict(X), model.predict(X))


def test_feature_names_round_trip(data):
    X, positive = data
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = NeuralNetClassifier(random_state=0, **TINY).fit(frame, positive.astype(int))
    loaded = _round_trip(model)
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    assert np.array_equal(loaded.predict(frame), model.predict(frame))


@pytest.mark.parametrize("n_targets", [1, 2])
def test_regressor_round_trip(data, n_targets):
    X, _ = data
    y = X[:, :n_targets] * 2.0 + 1.0
    model = NeuralNetRegressor(random_state=0, **TINY).fit(X, y[:, 0] if n_targets == 1 else y)
    loaded = _round_trip(model)
    assert loaded.predict(X).shape == model.predict(X).shape
    assert np.array_equal(loaded.predict(X), model.predict(X))


@pytest.fixture(scope="module")
def rounded(data):
    X, positive = data
    model = NeuralNetClassifier(random_state=0, rounding_threshold_bits=4, **TINY)
    return model.fit(X, positive.astype(int))


def _manifest(estimator) -> dict:
    with zipfile.ZipFile(io.BytesIO(_dumped(estimator))) as archive:
        return json.loads(archive.read(MANIFEST))


def test_rounded_integer_model_round_trips(rounded, data):
    X, _ = data
    loaded = _round_trip(rounded)
    assert loaded.rounding_threshold_bits == 4
    assert loaded.fhe_report()["layers"] == rounded.fhe_report()["layers"]
    assert np.array_equal(loaded.predict_proba(X), rounded.predict_proba(X))


def test_the_rounding_plan_is_saved(rounded, data):
    plan = rounded.module_.rounding_plan()
    assert plan.lsbs[0] > 0  # so that the tests below change it
    assert _manifest(rounded)["network"]["rounding_plan"] == {"lsbs": list(plan.lsbs)}
    X, positive = data
    exact = NeuralNetClassifier(random_state=0, rounding_threshold_bits=None, **TINY)
    exact.fit(X, positive.astype(int))
    assert _manifest(exact)["network"]["rounding_plan"] is None
    assert np.array_equal(_round_trip(exact).predict_proba(X), exact.predict_proba(X))


def _set_init_kwarg(name, value):
    return lambda m: m["network"]["init_kwargs"]["value"].update({name: value})


def _set_plan(plan):
    return lambda m: m["network"].update(rounding_plan=plan)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["network"]["rounding_plan"]["lsbs"].__setitem__(0, 0),
        _set_plan(None),
        _set_init_kwarg("rounding_threshold_bits", 6),
        _set_init_kwarg("rounding_threshold_bits", None),
    ],
    ids=["another plan", "no plan", "another threshold", "no threshold"],
)
def test_a_plan_the_weights_do_not_make_is_refused(rounded, change, rewrite_manifest):
    source = rewrite_manifest(_dumped(rounded), change)
    with pytest.raises(ValueError, match=r"network.rounding_plan: the file says .*corrupted"):
        qnn_sklearn.load(source)


def test_files_written_before_the_plan_and_compile_options_still_load(
    rounded, data, rewrite_manifest
):
    def written_before(manifest):
        del manifest["network"]["rounding_plan"], manifest["compile_options"]

    X, _ = data
    loaded = qnn_sklearn.load(rewrite_manifest(_dumped(rounded), written_before))
    assert loaded.fhe_report()["layers"] == rounded.fhe_report()["layers"]
    assert not hasattr(loaded, "saved_compile_options_")
    assert np.array_equal(loaded.predict_proba(X), rounded.predict_proba(X))


def test_the_error_probabilities_of_the_last_compile_are_saved(classifier, data):
    X, _ = data
    assert _manifest(classifier)["compile_options"] is None
    compiled = copy.deepcopy(classifier)
    compiled.compile(X, p_error=2**-10)
    assert _manifest(compiled)["compile_options"] == {"p_error": 2**-10, "global_p_error": None}
    loaded = _round_trip(compiled)
    assert loaded.saved_compile_options_ == CompileOptions(p_error=2**-10)
    # compile() without error probabilities uses the saved ones; given ones win
    recompiled = copy.deepcopy(loaded)
    recompiled.compile(X[:10])
    assert recompiled.quantized_module_.compile_options == CompileOptions(p_error=2**-10)
    # kept by a dump before compiling again, replaced by the next compile's
    assert _manifest(loaded)["compile_options"]["p_error"] == 2**-10
    loaded.compile(X[:10], global_p_error=1e-3)
    assert _manifest(loaded)["compile_options"] == {"p_error": None, "global_p_error": 1e-3}


def test_pruned_widths_round_trip(classifier, data):
    X, positive = data
    pruned = classifier.prune(X, np.where(positive, "yes", "no"), 0.5)
    assert pruned.module_.hidden_widths() != classifier.module_.hidden_widths()
    loaded = _round_trip(pruned)
    assert loaded.module_.hidden_widths() == pruned.module_.hidden_widths()
    assert loaded.module_.n_prune_neurons_percentage == 0.5
    assert np.array_equal(loaded.predict_proba(X), pruned.predict_proba(X))


def test_compile_after_load(classifier, data):
    X, _ = data
    loaded = _round_trip(classifier)
    with pytest.raises(RuntimeError, match="compile"):
        loaded.predict(X[:2], fhe="simulate")
    loaded.compile(X)
    assert np.array_equal(loaded.predict(X[:5], fhe="simulate"), classifier.predict(X[:5]))


def test_loaded_estimator_trains_on(classifier, data):
    X, positive = data
    loaded = _round_trip(classifier)
    loaded.partial_fit(X, np.where(positive, "yes", "no"))
    assert loaded.predict(X).shape == (len(X),)


def test_file_holds_no_pickle(classifier):
    with zipfile.ZipFile(io.BytesIO(_dumped(classifier))) as archive:
        names = archive.namelist()
        assert MANIFEST in names
        for name in names:
            assert name.endswith((".json", ".npy")), name
            if name.endswith(".npy"):
                array = np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
                assert array.dtype != object


def test_unknown_format_version_is_refused(classifier, rewrite_manifest):
    source = rewrite_manifest(_dumped(classifier), lambda m: m.update(format_version=99))
    with pytest.raises(
        ValueError, match=f"format version 99.*reads format version {FORMAT_VERSION}"
    ):
        qnn_sklearn.load(source)


def test_import_paths_outside_the_allow_list_are_refused(classifier, rewrite_manifest):
    def point_criterion_at(path):
        return lambda m: m["params"].update(criterion={"kind": "import", "value": path})

    for path in ("os:sep", "no_such_module:Loss", "torch.optim.adam:Adam"):
        source = rewrite_manifest(_dumped(classifier), point_criterion_at(path))
        with pytest.raises(ValueError, match=f"parameter 'criterion': '{path}' is not on the"):
            qnn_sklearn.load(source)


def test_callables_are_stored_as_import_paths(classifier):
    with zipfile.ZipFile(io.BytesIO(_dumped(classifier))) as archive:
        manifest = json.loads(archive.read(MANIFEST))
    assert manifest["params"]["optimizer"] == {"kind": "import", "value": "torch.optim.adam:Adam"}
    loaded = _round_trip(classifier)
    assert loaded.optimizer is torch.optim.Adam
    assert loaded.module_.init_kwargs["activation_function"] is torch.nn.ReLU


def test_file_naming_the_network_by_its_former_path_loads(classifier, data, rewrite_manifest):
    """Files written before the network moved to qnn_sklearn.torch.network still load."""
    former = "qnn_sklearn.sklearn.qnn_module:SparseQuantNeuralNetwork"
    with zipfile.ZipFile(io.BytesIO(_dumped(classifier))) as archive:
        assert json.loads(archive.read(MANIFEST))["params"]["module"]["value"] != former
    source = rewrite_manifest(
        _dumped(classifier),
        lambda m: m["params"].update(module={"kind": "import", "value": former}),
    )
    X = data[0]
    np.testing.assert_array_equal(
        qnn_sklearn.load(source).predict_proba(X), classifier.predict_proba(X)
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("callbacks", [("print", object())], r"parameter 'callbacks'\[0\]\[1\]"),
        ("predict_nonlinearity", lambda x: x, "parameter 'predict_nonlinearity'.*<lambda>"),
    ],
)
def test_undumpable_parameter_is_refused(classifier, name, value, message, tmp_path):
    model = copy.deepcopy(classifier)
    setattr(model, name, value)  # as set_params would, without re-initializing skorch
    target = tmp_path / "model.zip"
    with pytest.raises(ValueError, match=message):
        model.dump(target)
    assert not target.exists()


def test_bad_files(classifier, tmp_path):
    with pytest.raises(NotFittedError):
        NeuralNetClassifier().dump(io.BytesIO())
    with pytest.raises(ValueError, match="not a zip"):
        qnn_sklearn.load(io.BytesIO(b"not a zip at all"))
    with pytest.raises(TypeError, match="binary mode"):
        with open(tmp_path / "text.zip", "w") as text_file:
            classifier.dump(text_file)
