"""What :class:`~qnn_sklearn.deployment.FHEModelDev` deploys: a compiled module and its task.

FHEModelDev does not probe models for attributes. It deploys a :class:`ServedModel`, which
states explicitly what the client does with the dequantized output (nothing, ``predict_proba``
or ``predict``). :meth:`ServedModel.of` builds one from the two things users pass:

- a compiled :class:`~qnn_sklearn.quantization.QuantizedModule`, whose output is served as is;
- a fitted, compiled estimator of the :class:`DeployableEstimator` protocol, which the
  package's ``NeuralNetClassifier`` and ``NeuralNetRegressor`` satisfy.

This module imports neither the estimators nor torch: deployment depends on the integer model
only, so that a server does not import the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..quantization import QuantizedModule

TASK_MODULE = "module"
TASK_CLASSIFIER = "classifier"
TASK_REGRESSOR = "regressor"
TASKS = (TASK_MODULE, TASK_CLASSIFIER, TASK_REGRESSOR)


@runtime_checkable
class DeployableEstimator(Protocol):
    """A fitted scikit-learn estimator whose integer model FHEModelDev can deploy.

    Attributes
    ----------
    quantized_module_ : QuantizedModule
        The integer model, compiled with ``compile(X)``.
    classes_ : ndarray
        Classifiers (``sklearn.base.is_classifier``) only: the labels, in the order of the
        network's outputs. The client serves ``predict_proba``.
    target_ndim_ : int, optional
        Regressors only: 1 when fitted on a 1-D target, so that ``predict`` is 1-D. Without
        it, a network with one output is served as 1-D.
    """

    quantized_module_: QuantizedModule


@dataclass(frozen=True)
class ServedModel:
    """A compiled module and what the client makes of its dequantized output.

    Parameters
    ----------
    module : QuantizedModule
        Compiled (``compile(X)``); its circuit is what ``server.zip`` runs.
    task : {"module", "classifier", "regressor"}, default "module"
        "classifier": the client returns the softmax of the output (``predict_proba``) and
        holds ``classes``; "regressor": the output, 1-D when ``squeeze_output``; "module":
        the output as is.
    classes : array-like, optional
        The labels of a classifier, in the order of the outputs.
    squeeze_output : bool, optional
        Regressor: return the single output column as a 1-D array. ``None``: when the network
        has one output.
    """

    module: QuantizedModule
    task: str = TASK_MODULE
    classes: np.ndarray | None = None
    squeeze_output: bool | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}.")
        if (self.task == TASK_CLASSIFIER) != (self.classes is not None):
            raise ValueError("classes are given for a classifier, and only for a classifier.")
        if not self.module.is_compiled:
            raise RuntimeError(
                "This model has no FHE circuit yet: call compile(X) first, then save it."
            )

    @classmethod
    def of(cls, model: QuantizedModule | DeployableEstimator | ServedModel) -> ServedModel:
        """The served model of a compiled module or a fitted, compiled estimator."""
        # Imported here: a server never calls this, and scikit-learn adds to its start-up.
        from sklearn.base import BaseEstimator, is_classifier

        if isinstance(model, ServedModel):
            return model
        if isinstance(model, QuantizedModule):
            return cls(model)
        if isinstance(model, DeployableEstimator):
            if is_classifier(model):
                return cls(model.quantized_module_, TASK_CLASSIFIER, np.asarray(model.classes_))
            target_ndim = getattr(model, "target_ndim_", None)
            squeeze = None if target_ndim is None else target_ndim == 1
            return cls(model.quantized_module_, TASK_REGRESSOR, squeeze_output=squeeze)
        if isinstance(model, BaseEstimator):
            raise ValueError(
                f"This {type(model).__name__} has no quantized_module_: fit it and call "
                "compile(X) before saving it for deployment."
            )
        raise TypeError(
            "FHEModelDev needs a compiled QuantizedModule, a fitted estimator with a "
            f"quantized_module_ or a ServedModel, got {type(model).__name__}."
        )
