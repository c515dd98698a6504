"""Training and scoring shared by every benchmark mode: one way to split, train and score.

Each mode (suite, seeds, sweep, rounding) trains an estimator from a configuration's parameters
and scores it the same way, so that their tables can be compared row for row.
"""

from __future__ import annotations

import time

import numpy as np
import skorch
import torch
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from tasks import Config, Task, load


def metric(task: Task, y_true, y_pred) -> float:
    """Accuracy for classifiers, R² for regressors (the anchor's metrics)."""
    if task.kind == "classification":
        return float(accuracy_score(y_true, y_pred))
    return float(r2_score(y_true, y_pred))


def validation_split(task: Task):
    """``(X_fit, X_val, X_test, y_fit, y_val, y_test)``: 80/20 of the train split (stratified
    for classifiers, ``random_state=0``), so that a selection never looks at the test split."""
    X_train, X_test, y_train, y_test = load(task.name)
    stratify = y_train if task.kind == "classification" else None
    X_fit, X_val, y_fit, y_val = train_test_split(
        X_train, y_train, test_size=0.2, random_state=0, stratify=stratify
    )
    return X_fit, X_val, X_test, y_fit, y_val, y_test


def estimator_params(
    config: Config, task: Task, n_train: int, seed: int = 0, epochs: int | None = None
) -> dict:
    """The configuration's estimator parameters on this task, at ``random_state=seed``;
    ``epochs`` overrides the configuration's (the smoke run's few epochs)."""
    params = {**config.estimator_params(task, n_train), "random_state": seed}
    if epochs is not None:
        params["max_epochs"] = epochs
    return params


def train(task: Task, params: dict, X, y):
    """``(model, seconds)``: the task's estimator fitted with ``params``."""
    start = time.perf_counter()
    model = task.estimator(**params).fit(X, y)
    return model, time.perf_counter() - start


def score(task: Task, model, X, y) -> dict:
    """The Brevitas (torch, fake-quantized) and integer (``fhe="disable"``) metrics, and the
    share of rows where the two predict the same class (classifiers; None for regressors)."""
    torch_out = np.asarray(model.forward(X).detach().cpu().numpy())
    integer = model.predict(X)
    if task.kind == "classification":
        torch_pred = model.classes_[torch_out.argmax(axis=1)]
        agreement = float(np.mean(torch_pred == integer))
    else:
        torch_pred, agreement = torch_out[:, 0], None
    return {
        "torch_metric": metric(task, y, torch_pred),
        "integer_metric": metric(task, y, integer),
        "integer_eq_torch": agreement,
    }


class FloatMLP(torch.nn.Module):
    """The fp32 baseline: the estimator's layout (same widths, ReLU) without quantization."""

    def __init__(self, input_dim: int, n_outputs: int, hidden: int, n_layers: int):
        super().__init__()
        widths = [input_dim] + [hidden] * (n_layers - 1) + [n_outputs]
        layers: list[torch.nn.Module] = []
        for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(torch.nn.Linear(n_in, n_out))
            if index < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def fp32_baseline(task: Task, params: dict, X_train, y_train, X_test, y_test) -> dict:
    """Train the float MLP in skorch with the estimator's lr, batch size and epochs: what the
    quantization costs is the distance from this metric."""
    n_outputs = len(np.unique(y_train)) if task.kind == "classification" else 1
    common = {
        "module": FloatMLP,
        "module__input_dim": X_train.shape[1],
        "module__n_outputs": n_outputs,
        "module__hidden": X_train.shape[1] * params["module__n_hidden_neurons_multiplier"],
        "module__n_layers": params["module__n_layers"],
        "optimizer": torch.optim.Adam,
        "lr": params["lr"],
        "batch_size": params["batch_size"],
        "max_epochs": params["max_epochs"],
        "train_split": None,
        "verbose": 0,
        "iterator_train__shuffle": True,
    }
    torch.manual_seed(0)
    start = time.perf_counter()
    if task.kind == "classification":
        net = skorch.NeuralNetClassifier(criterion=torch.nn.CrossEntropyLoss, **common)
        net.fit(X_train, y_train.astype(np.int64))
        prediction = net.predict(X_test)
    else:
        net = skorch.NeuralNetRegressor(**common)
        net.fit(X_train, y_train.reshape(-1, 1))
        prediction = net.predict(X_test)[:, 0]
    return {"metric": metric(task, y_test, prediction), "train_s": time.perf_counter() - start}
