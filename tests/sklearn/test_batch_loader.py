"""The estimators' data loader gives torch's batches, indexed once per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset, ValidSplit
from torch.utils.data import DataLoader, TensorDataset

from qnn_sklearn import NeuralNetClassifier
from qnn_sklearn.sklearn.batch_loader import BatchIndexedLoader


def _rows(n_rows: int = 203):
    rng = np.random.default_rng(0)
    X = {
        "X": rng.normal(size=(n_rows, 5)).astype(np.float32),
        "sample_weight": rng.uniform(size=n_rows).astype(np.float32),
    }
    return Dataset(X, rng.integers(0, 3, n_rows))


def _batches(loader_class, dataset, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return list(loader_class(dataset, **kwargs))


def _assert_same(expected, got):
    assert len(got) == len(expected)
    for (x_expected, y_expected), (x_got, y_got) in zip(expected, got):
        assert x_got.keys() == x_expected.keys()
        for key in x_expected:
            assert x_got[key].dtype == x_expected[key].dtype
            assert torch.equal(x_got[key], x_expected[key])
        assert y_got.dtype == y_expected.dtype and torch.equal(y_got, y_expected)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_same_batches_as_torchs_loader(shuffle, drop_last):
    dataset = _rows()
    kwargs = {"batch_size": 16, "shuffle": shuffle, "drop_last": drop_last}
    _assert_same(
        _batches(DataLoader, dataset, **kwargs), _batches(BatchIndexedLoader, dataset, **kwargs)
    )


def test_a_validation_subset_is_indexed_per_batch_too():
    train, valid = ValidSplit(4, stratified=False)(_rows())
    for subset in (train, valid):
        expected = _batches(DataLoader, subset, batch_size=8)
        loader = BatchIndexedLoader(subset, batch_size=8)
        assert loader.batch_size is None  # indexed per batch
        _assert_same(expected, list(loader))


def test_torchs_loading_for_another_dataset_or_a_collate_fn():
    """A dataset that may not take a list of rows, or a collate_fn (applied per row), keep
    torch's row-by-row loading."""
    tensors = TensorDataset(torch.arange(10.0)[:, None], torch.arange(10))
    assert BatchIndexedLoader(tensors, batch_size=4).batch_size == 4
    collate = BatchIndexedLoader(_rows(), batch_size=4, collate_fn=lambda rows: len(rows))
    assert list(collate)[0] == 4


def test_the_estimator_trains_as_with_torchs_loader(iris_split):
    """Same seed, same batches: the default loader and torch's train the same network."""
    X_train, _, y_train, _ = iris_split
    params = {"random_state": 0, "max_epochs": 3}
    ours = NeuralNetClassifier(**params).fit(X_train, y_train)
    torchs = NeuralNetClassifier(
        iterator_train=DataLoader, iterator_valid=DataLoader, **params
    ).fit(X_train, y_train)
    for (name, ours_value), torchs_value in zip(
        ours.module_.state_dict().items(), torchs.module_.state_dict().values()
    ):
        assert torch.equal(ours_value, torchs_value), name
