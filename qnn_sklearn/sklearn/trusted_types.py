"""The classes ``qnn_sklearn.load`` may call, by the role each plays in a saved estimator.

A saved estimator names classes by import path ``"module:qualname"``. Loading looks each path
up in the allow-list of the parameter it appears in; it never imports a path. A path that is
not listed is refused before anything is imported or called, so a crafted file cannot run
``os:popen`` as its loss, nor run the import code of a module of its choosing.

The built-in list holds only what a saved estimator needs:

- the estimators and their network (``module``);
- torch losses (``criterion``), torch optimizers (``optimizer``) and torch activations
  (``module__activation_function``);
- skorch's data loader and dataset (``iterator_train``, ``iterator_valid``, ``dataset``);
- skorch's callbacks, except those that read or write files or send data to services named
  by their arguments (``Checkpoint``, ``TrainEndCheckpoint``, ``LoadInitState`` and the
  loggers), and qnn_sklearn's own (``callbacks``).

A class or function of the user's, passed to ``load(file, trusted=[...])``, is accepted in any
parameter: that is the user's statement that calling it is safe.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable

import skorch.callbacks
import skorch.dataset
import torch
import torch.utils.data
from torch.nn.modules import activation, loss

from ..torch.network import SparseQuantNeuralNetwork
from . import callbacks
from .batch_loader import BatchIndexedLoader
from .import_paths import import_object, import_path
from .qnn import NeuralNetClassifier, NeuralNetRegressor

ESTIMATOR = "estimator"
MODULE = "module"
CRITERION = "criterion"
OPTIMIZER = "optimizer"
ACTIVATION = "activation"
CALLBACK = "callback"
ITERATOR = "iterator"
DATASET = "dataset"

PARAMETER_ROLES = {
    "module": MODULE,
    "criterion": CRITERION,
    "optimizer": OPTIMIZER,
    "module__activation_function": ACTIVATION,
    "callbacks": CALLBACK,
    "iterator_train": ITERATOR,
    "iterator_valid": ITERATOR,
    "dataset": DATASET,
}
"""Estimator parameters that may name a built-in class; every other parameter holds plain
JSON values (or classes the user trusts)."""

SKORCH_CALLBACKS = (
    "BatchScoring",
    "EarlyStopping",
    "EpochScoring",
    "EpochTimer",
    "Freezer",
    "GradientNormClipping",
    "Initializer",
    "InputShapeSetter",
    "LRScheduler",
    "ParamMapper",
    "PassthroughScoring",
    "PrintLog",
    "ProgressBar",
    "Unfreezer",
    "WarmRestartLR",
)
"""skorch callbacks whose arguments cannot name a file or a service."""


FORMER_MODULE_PATHS = {
    "qnn_sklearn.sklearn.qnn_module:SparseQuantNeuralNetwork": SparseQuantNeuralNetwork
}
"""Where files written before the network moved to ``qnn_sklearn.torch.network`` name it."""


@functools.cache
def builtin_allow_list() -> dict[str, dict[str, type]]:
    """Role → {import path: class}, built from modules that are already imported."""
    roles = {
        ESTIMATOR: [NeuralNetClassifier, NeuralNetRegressor],
        MODULE: [SparseQuantNeuralNetwork],
        CRITERION: _public_subclasses(loss, torch.nn.modules.loss._Loss),
        OPTIMIZER: _public_subclasses(torch.optim, torch.optim.Optimizer),
        ACTIVATION: _public_subclasses(activation, torch.nn.Module),
        CALLBACK: [getattr(skorch.callbacks, name) for name in SKORCH_CALLBACKS]
        + _public_subclasses(callbacks, skorch.callbacks.Callback),
        ITERATOR: [torch.utils.data.DataLoader, BatchIndexedLoader],
        DATASET: [skorch.dataset.Dataset],
    }
    allow_list = {
        role: {import_path(cls): cls for cls in classes} for role, classes in roles.items()
    }
    allow_list[MODULE].update(FORMER_MODULE_PATHS)
    return allow_list


def _public_subclasses(module, base: type) -> list[type]:
    """Public classes of ``module``'s namespace that derive from ``base``, ``base`` excluded."""
    return [
        value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, base)
        and value is not base
    ]


def resolve_trusted(trusted: Iterable | None) -> dict[str, object]:
    """{import path: object} of the user's ``trusted`` entries.

    An entry is a class or a function, or its ``"module:qualname"`` string; a string is
    imported here, because the user named it.
    """
    resolved = {}
    for entry in trusted or ():
        obj = import_object(entry) if isinstance(entry, str) else entry
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            raise ValueError(
                f"trusted entries are classes, functions or 'module:qualname' strings; got "
                f"{entry!r}."
            )
        resolved[import_path(obj)] = obj
    return resolved
