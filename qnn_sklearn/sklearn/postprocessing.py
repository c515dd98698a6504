"""The estimators' name for :mod:`qnn_sklearn.postprocessing` (qnn.py imports it from here)."""

from ..postprocessing import softmax

__all__ = ["softmax"]
