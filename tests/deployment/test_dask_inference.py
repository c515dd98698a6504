"""Dask scale-out: sharded encrypted inference and GridSearchCV on a 2-worker LocalCluster."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream
from sklearn.model_selection import GridSearchCV

from qnn_sklearn.deployment import framing
from qnn_sklearn.deployment.dask_inference import DaskFHEInference


@pytest.fixture(scope="module")
def dask_client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
    with cluster, Client(cluster) as client:
        yield client


def test_sharded_encrypted_inference(dask_client, model_dir, fhe_client, evaluation_keys, tiny):
    inference = DaskFHEInference(dask_client, model_dir)
    plugin = inference.plugin.name
    loaded = dask_client.run(lambda dask_worker: dask_worker.plugins[plugin].server is not None)
    assert list(loaded.values()) == [True, True]  # server.zip loaded once on each worker

    key_id = inference.add_keys(evaluation_keys)
    X = np.random.default_rng(8).normal(size=(6, 3))
    out = inference.run(fhe_client.quantize_encrypt_serialize(X), key_id, n_shards=3)
    assert framing.count(out) == len(X)
    np.testing.assert_array_equal(
        fhe_client.deserialize_decrypt_dequantize(out), tiny[0].forward(X)
    )
    holding = inference.workers_holding_keys(key_id)
    assert 1 <= holding <= 2  # deserialized at most once per worker, then cached
    out = inference.run(fhe_client.quantize_encrypt_serialize(X[:2]), key_id)
    np.testing.assert_array_equal(
        fhe_client.deserialize_decrypt_dequantize(out), tiny[0].forward(X[:2])
    )
    inference.remove_keys(key_id)
    with pytest.raises(KeyError):
        inference.run(out, key_id)


def _lr_search() -> GridSearchCV:
    from qnn_sklearn import NeuralNetClassifier

    estimator = NeuralNetClassifier(
        module__n_layers=2,
        module__n_hidden_neurons_multiplier=2,
        max_epochs=2,
        random_state=0,
    )
    return GridSearchCV(estimator, {"lr": [1e-1, 1e-3]}, cv=2)


def test_grid_search_under_the_dask_joblib_backend(dask_client):
    """The cluster runs the fits, and they score as the same search run in this process."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = _lr_search().fit(X, y)
        with get_task_stream(dask_client) as stream, joblib.parallel_backend("dask"):
            on_cluster = _lr_search().fit(X, y)
    assert len(stream.data) >= 4  # 2 learning rates x 2 folds ran as tasks on the workers
    np.testing.assert_allclose(
        on_cluster.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert on_cluster.best_params_ == local.best_params_
    np.testing.assert_array_equal(on_cluster.predict(X), local.predict(X))
