"""Estimators fitted once per session (training and compiling are the slow parts)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from qnn_sklearn import NeuralNetClassifier


def _fit_classifier(X, y, **params) -> NeuralNetClassifier:
    """A NeuralNetClassifier fitted with Adam at lr 0.02 and random_state 0, ``params`` on top."""
    return NeuralNetClassifier(**{"lr": 0.02, "random_state": 0, **params}).fit(X, y)


@pytest.fixture(scope="session")
def fit_classifier():
    """``fit_classifier(X, y, **params)``: see :func:`_fit_classifier`."""
    return _fit_classifier


@pytest.fixture(scope="session")
def iris_split():
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    names = np.array(["setosa", "versicolor", "virginica"])
    return scaler.transform(X_train), scaler.transform(X_test), names[y_train], names[y_test]


@pytest.fixture(scope="session")
def iris_classifier(iris_split, insecure_fhe_configuration):
    """A fitted and compiled 3/3/8-bit classifier with string labels (insecure key cache)."""
    X_train, _, y_train, _ = iris_split
    model = _fit_classifier(
        X_train, y_train, module__n_layers=2, module__n_hidden_neurons_multiplier=4, max_epochs=60
    )
    model.compile(X_train, configuration=insecure_fhe_configuration)
    return model


def _rewrite_manifest(source, change) -> io.BytesIO:
    """A copy of a dumped zip (bytes or a path) whose manifest went through ``change``."""
    source = io.BytesIO(source) if isinstance(source, bytes) else source
    out = io.BytesIO()
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(out, "w") as new:
        for name in old.namelist():
            content = old.read(name)
            if name == "manifest.json":
                manifest = json.loads(content)
                change(manifest)
                content = json.dumps(manifest)
            new.writestr(name, content)
    out.seek(0)
    return out


@pytest.fixture(scope="session")
def rewrite_manifest():
    """``rewrite_manifest(source, change)``: see :func:`_rewrite_manifest`."""
    return _rewrite_manifest
