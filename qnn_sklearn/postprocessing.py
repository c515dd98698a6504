"""What turns the dequantized network output into an estimator's answer, in the clear.

At the top level, beside :mod:`qnn_sklearn.safe_zip`: both the estimators and the deployment
client use it, and the client must not import the training stack (qnn_sklearn.sklearn, torch).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits, row by row (numerically stable)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
