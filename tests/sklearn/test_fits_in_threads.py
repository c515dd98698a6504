"""Fits in threads of one process (a search with a threading backend): each exports its
network while others train, and each integer model is its own trained network."""

from __future__ import annotations

import threading

import numpy as np

from qnn_sklearn import NeuralNetClassifier


def test_fits_in_threads_each_export_their_own_network(iris_split):
    X_train, X_test, y_train, _ = iris_split
    models, errors = {}, []

    def fit(seed: int) -> None:
        try:
            models[seed] = NeuralNetClassifier(
                module__n_layers=2, max_epochs=4, lr=0.02, random_state=seed
            ).fit(X_train, y_train)
        except Exception as error:  # reported below, with the seed
            errors.append((seed, repr(error)))

    threads = [threading.Thread(target=fit, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []  # Brevitas refused concurrent exports before the export lock
    for model in models.values():
        logits = model.forward(X_test.astype(np.float32)).detach().numpy()
        network_labels = model.classes_[logits.argmax(axis=1)]
        np.testing.assert_array_equal(model.predict(X_test), network_labels)
