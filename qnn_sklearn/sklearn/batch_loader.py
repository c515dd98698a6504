"""The estimators' data loader: each batch's rows taken in one index, not one row at a time."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import skorch.dataset
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, Subset


class BatchIndexedLoader(DataLoader):
    """A ``DataLoader`` that takes each batch from skorch's Dataset in one index per array,
    where torch's indexes the Dataset once per row and stacks the rows.

    Why (issue 15): skorch's Dataset indexes a row through a few Python calls (per key, for
    the dict of inputs and weights that weighted rows come as, row_weights.py), and torch's
    loader collates the rows one by one: a batch of 64 dict rows took 0.54 ms. Indexed once
    through the Dataset, scikit-learn's ``_safe_indexing`` still checked the type of every
    row index and whether the data were a data frame: 0.8 ms of a breast_cancer step's 6.
    So the arrays are indexed directly (:class:`_ArrayRows`). The batches are the same, in
    the same order, from the same random numbers (the sampler is the one torch's ``shuffle``
    builds); batch, shuffle and ``drop_last`` keep their meaning. Another dataset, or a
    loader given its own sampler or ``collate_fn`` (which torch applies per row), gets
    torch's loading unchanged.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, **kwargs):
        own_loading = {"sampler", "batch_sampler", "collate_fn"} & kwargs.keys()
        rows = None if own_loading else _ArrayRows.of(dataset)
        if rows is None:
            super().__init__(
                dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **kwargs
            )
            return
        order = (
            RandomSampler(dataset, generator=kwargs.pop("generator", None))
            if shuffle
            else SequentialSampler(dataset)
        )
        super().__init__(
            rows, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last), **kwargs
        )


class _ArrayRows:
    """The arrays of a skorch Dataset (or of a torch Subset of one: a validation split),
    indexed by a list of rows at once; torch's loader turns the batch into tensors as it
    would have turned the Dataset's."""

    def __init__(self, X, y, rows: np.ndarray | None):
        self.X, self.y, self.rows = X, y, rows

    @classmethod
    def of(cls, dataset) -> _ArrayRows | None:
        """The rows of ``dataset``; None unless it is skorch's Dataset of arrays (or a dict
        of them), possibly within Subsets."""
        rows = None
        while type(dataset) is Subset:
            indices = np.asarray(dataset.indices, dtype=np.int64)
            rows = indices if rows is None else indices[rows]
            dataset = dataset.dataset
        if type(dataset) is not skorch.dataset.Dataset or dataset.X_is_ndframe:
            return None
        arrays = list(dataset.X.values()) if isinstance(dataset.X, Mapping) else [dataset.X]
        if dataset.y is not None:
            arrays.append(dataset.y)
        if not all(isinstance(array, np.ndarray | torch.Tensor) for array in arrays):
            return None
        return cls(dataset.X, dataset.y, rows)

    def __getitem__(self, indices: list[int]):
        index = np.asarray(indices, dtype=np.int64)
        if self.rows is not None:
            index = self.rows[index]
        if isinstance(self.X, Mapping):
            X = {key: value[index] for key, value in self.X.items()}
        else:
            X = self.X[index]
        # skorch's Dataset gives a placeholder for a missing target (Dataset.transform)
        return X, torch.Tensor([0]) if self.y is None else self.y[index]
