"""qnn_sklearn: quantized neural networks with scikit-learn habits, predicting on encrypted data.

The public names are imported on first use (PEP 562), so that a deployment server, which only
needs ``qnn_sklearn.deployment``, does not pay for importing torch and Brevitas.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY_NAMES = {
    "FHEModelSearchCV": "qnn_sklearn.search",
    "NeuralNetClassifier": "qnn_sklearn.sklearn",
    "NeuralNetRegressor": "qnn_sklearn.sklearn",
    "load": "qnn_sklearn.sklearn.persistence",
}
"""Public name → the module that defines it."""

__all__ = ["FHEModelSearchCV", "NeuralNetClassifier", "NeuralNetRegressor", "__version__", "load"]


def __getattr__(name: str):
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})
