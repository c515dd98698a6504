"""NeuralNetClassifier and NeuralNetRegressor: skorch estimators that predict in FHE."""

from __future__ import annotations

import numpy as np
import skorch
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ..postprocessing import softmax
from .fhe_estimator import FHEEstimatorMixin, estimator_defaults


class NeuralNetClassifier(FHEEstimatorMixin, skorch.NeuralNetClassifier):
    """Quantization-aware MLP classifier whose predictions can run on encrypted data.

    Module parameters are given with the ``module__`` prefix (``module__n_layers``,
    ``module__n_w_bits``, ``module__n_a_bits``, ``module__n_accum_bits``, ...);
    ``input_dim`` and ``n_outputs`` are inferred from the data. Labels may be of any type.
    Settings the integer model cannot run (an unknown ``module__`` name, a 1-bit grid, an
    activation without an integer form) raise ValueError in ``fit``, before training.

    Parameters
    ----------
    random_state : int or None
        Seeds torch for the fit: the same seed gives the same model.
    rounding_threshold_bits : int, "auto" or None
        Round every hidden accumulator before its table lookup (``round_bit_pattern``: cheaper
        bootstraps), and train with that rounding: the network learns around it, and the
        integer model, its simulation and FHE compute exactly what the trained network does.
        An integer keeps that many most significant bits of each layer's certified range, so
        each lookup runs at that precision at most; ``"auto"`` (the default) keeps
        ``n_a_bits + 1``. None keeps the exact accumulators (the seed's behaviour). Invalid
        values raise ValueError in ``fit``.
    **kwargs
        Any skorch ``NeuralNetClassifier`` argument.
    """

    def __init__(self, random_state=None, rounding_threshold_bits="auto", **kwargs):
        kwargs = estimator_defaults(torch.nn.CrossEntropyLoss, kwargs)
        super().__init__(**kwargs)
        self._replace_torch_compile()
        self.random_state = random_state
        self.rounding_threshold_bits = rounding_threshold_bits

    @property
    def classes_(self):
        check_is_fitted(self, "label_encoder_")
        return self.label_encoder_.classes_

    def _encode_target(self, y, n_samples):
        y = column_or_1d(np.asarray(y), warn=True)
        if len(y) != n_samples:
            raise ValueError(f"X has {n_samples} samples but y has {len(y)}.")
        check_classification_targets(y)
        self.label_encoder_ = LabelEncoder().fit(y if self.classes is None else self.classes)
        if len(self.label_encoder_.classes_) < 2:
            raise ValueError("The classifier needs at least 2 classes in y; got 1 class.")
        return self.label_encoder_.transform(y).astype(np.int64), len(self.classes_)

    def predict_proba(self, X, execute_in_fhe: bool = False, fhe: str | None = None):
        """Class probabilities from the integer model (``fhe``: disable, simulate, execute)."""
        return softmax(self._network_output(X, execute_in_fhe, fhe))

    def predict(self, X, execute_in_fhe: bool = False, fhe: str | None = None):
        """Labels from the integer model, in the clear, simulated or encrypted."""
        return self.classes_[self.predict_proba(X, execute_in_fhe, fhe).argmax(axis=1)]


class NeuralNetRegressor(FHEEstimatorMixin, skorch.NeuralNetRegressor):
    """Quantization-aware MLP regressor whose predictions can run on encrypted data.

    Targets may be 1-D (predictions are 1-D) or 2-D (one network output per column).
    See :class:`NeuralNetClassifier` for the parameters.
    """

    def __init__(self, random_state=None, rounding_threshold_bits="auto", **kwargs):
        kwargs = estimator_defaults(torch.nn.MSELoss, kwargs)
        super().__init__(**kwargs)
        self._replace_torch_compile()
        self.random_state = random_state
        self.rounding_threshold_bits = rounding_threshold_bits

    def _encode_target(self, y, n_samples):
        y = np.asarray(y)
        if y.ndim not in (1, 2) or len(y) != n_samples:
            raise ValueError(
                f"y must be 1-D or 2-D with {n_samples} rows like X; got shape {y.shape}."
            )
        try:
            y = y.astype(np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Regression targets must be numeric: {error}") from error
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinity; clean or impute it first.")
        self.target_ndim_ = y.ndim
        y = y.reshape(len(y), -1)
        return y, y.shape[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @property
    def predict_proba(self):
        """Regressors have no class probabilities (skorch's inherited method is hidden)."""
        raise AttributeError("NeuralNetRegressor has no predict_proba; use predict.")

    def predict(self, X, execute_in_fhe: bool = False, fhe: str | None = None):
        """Predictions from the integer model, in the clear, simulated or encrypted."""
        output = self._network_output(X, execute_in_fhe, fhe)
        return output[:, 0] if self.target_ndim_ == 1 else output
