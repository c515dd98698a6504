"""How much each training row counts: ``sample_weight`` times the classifier's ``class_weight``.

Rows of different weights reach skorch in its dict-X convention, ``{"X": inputs,
"sample_weight": weights}``, so the weights follow every row through shuffling, batching and a
validation split; the estimators' ``infer`` hands the network the inputs only, and their
``get_loss`` averages the criterion's per-row losses with the weights (:func:`weighted_mean`).
Rows that all weigh 1 (no ``sample_weight``, no ``class_weight``) reach it as they are: a
batch's loss is then the criterion's mean, without the weighting's autograd nodes.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

INPUTS = "X"
"""Key of the inputs in the rows handed to skorch."""

WEIGHTS = "sample_weight"
"""Key of the row weights in the rows handed to skorch."""


def weighted_rows(X: np.ndarray, weights: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
    """The training rows as skorch takes them: ``X`` if every row weighs 1, else skorch's
    dict-X convention with the weights."""
    if np.all(weights == 1):
        return X
    return {INPUTS: X, WEIGHTS: weights}


def row_weights(sample_weight, n_rows: int, class_weights: np.ndarray) -> np.ndarray:
    """``sample_weight`` (None: 1 for every row) times each row's class weight, checked: one
    finite weight ≥ 0 per row, and not all 0."""
    if sample_weight is None:
        weights = np.ones(n_rows)
    else:
        try:
            weights = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"sample_weight must be numbers: {error}") from error
        if weights.shape != (n_rows,):
            raise ValueError(
                f"sample_weight must hold one weight per row of X ({n_rows}); "
                f"got shape {weights.shape}."
            )
        if not np.all(np.isfinite(weights)):
            raise ValueError("sample_weight contains NaN or infinity.")
        if np.any(weights < 0):
            raise ValueError(f"sample_weight must be >= 0; its smallest is {weights.min()}.")
    weights = weights * class_weights
    if not np.any(weights > 0):
        raise ValueError(
            "Every row's weight is zero (sample_weight times class_weight): nothing to learn."
        )
    return weights.astype(np.float32)


def class_row_weights(class_weight, codes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The weight of each row's class (``codes`` index ``classes``, the user's labels).

    None weighs every class 1. ``"balanced"`` weighs a class ``n_rows / (n_classes ·
    its count)`` over the classes present in this ``y`` (scikit-learn's
    ``compute_class_weight``; a ``partial_fit`` batch is balanced on its own). A dict maps
    labels to weights; classes it leaves out weigh 1.
    """
    per_class = np.ones(len(classes))
    if isinstance(class_weight, str) and class_weight == "balanced":
        present = np.unique(codes)
        per_class[present] = compute_class_weight("balanced", classes=present, y=codes)
    elif isinstance(class_weight, Mapping):
        labels = classes.tolist()
        for label, weight in class_weight.items():
            if label not in labels:
                raise ValueError(
                    f"class_weight names the label {label!r}, which is not a class; "
                    f"the classes are {labels}."
                )
            if (
                isinstance(weight, bool)
                or not isinstance(weight, numbers.Real)
                or not np.isfinite(weight)
                or weight < 0
            ):
                raise ValueError(f"class_weight[{label!r}] must be a number >= 0; got {weight!r}.")
            per_class[labels.index(label)] = weight
    elif class_weight is not None:
        raise ValueError(
            f'class_weight must be None, "balanced" or a dict {{label: weight}}; '
            f"got {class_weight!r}."
        )
    return per_class[codes]


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ weight · loss / Σ weight`` over a batch of per-row losses (a row's several outputs
    averaged first). A batch whose rows all weigh 0 gives 0, and no gradient."""
    losses = losses.reshape(len(losses), -1).mean(dim=1)
    return (losses * weights).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


def takes_reduction(criterion) -> bool:
    """Whether the criterion class takes ``reduction`` (torch's losses do; a user's may not).
    The estimators then ask it for per-row losses (``reduction="none"``) to weigh them."""
    if not isinstance(criterion, type):
        return False
    try:
        return "reduction" in inspect.signature(criterion).parameters
    except (TypeError, ValueError):
        return False


def weighted_loss(losses: torch.Tensor, weights: torch.Tensor | None, criterion) -> torch.Tensor:
    """The batch's loss: per-row ``losses`` averaged with the rows' ``weights`` (None: equal).

    A criterion without ``reduction`` gives the batch's loss already, which is kept when every
    row weighs the same; different weights then raise ValueError naming the fix.
    """
    if losses.dim() == 0:
        if weights is not None and not bool(torch.all(weights == weights[0])):
            raise ValueError(
                f"sample_weight and class_weight need a criterion that takes "
                f"reduction='none'; {criterion!r} does not. Add that argument to it, or train "
                "without row weights."
            )
        return losses
    if weights is None:
        return losses.mean()
    return weighted_mean(losses, weights.to(losses))
