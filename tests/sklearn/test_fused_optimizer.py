"""The estimators' optimizer runs torch's fused kernel unless the user chose otherwise."""

from __future__ import annotations

import pytest
import torch

from qnn_sklearn import NeuralNetClassifier
from qnn_sklearn.sklearn.fused_optimizer import fused_by_default


def _fitted(iris_split, **params):
    X_train, _, y_train, _ = iris_split
    return NeuralNetClassifier(random_state=0, max_epochs=1, **params).fit(X_train, y_train)


def test_adam_is_fused_by_default(iris_split):
    optimizer = _fitted(iris_split).optimizer_
    assert isinstance(optimizer, torch.optim.Adam)
    assert all(group["fused"] for group in optimizer.param_groups)


@pytest.mark.parametrize("choice", [{"optimizer__foreach": True}, {"optimizer__fused": False}])
def test_a_users_implementation_is_kept(iris_split, choice):
    optimizer = _fitted(iris_split, **choice).optimizer_
    assert not any(group["fused"] for group in optimizer.param_groups)


def test_an_optimizer_without_a_fused_kernel_is_left_alone(iris_split):
    optimizer = _fitted(iris_split, optimizer=torch.optim.NAdam).optimizer_
    assert isinstance(optimizer, torch.optim.NAdam)
    assert fused_by_default(torch.optim.NAdam, {"lr": 0.1}) == {"lr": 0.1}
    assert fused_by_default(torch.optim.SGD, {"lr": 0.1}) == {"lr": 0.1, "fused": True}
    assert fused_by_default(torch.optim.Adam, {"differentiable": True}) == {"differentiable": True}
