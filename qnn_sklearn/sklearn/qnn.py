"""NeuralNetClassifier and NeuralNetRegressor: skorch estimators that predict in FHE."""

from __future__ import annotations

import numpy as np
import skorch
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ..postprocessing import softmax
from ..torch.network import SparseQuantNeuralNetwork
from .batch_loader import BatchIndexedLoader
from .fhe_estimator import FHEEstimatorMixin
from .row_weights import class_row_weights
from .training_length import AUTO_EPOCHS


def estimator_defaults(criterion, kwargs: dict) -> dict:
    """skorch arguments of both estimators (quiet, shuffled, no hold-out split, batches
    indexed at once), then the user's ``kwargs`` on top."""
    defaults = {
        "criterion": criterion,
        "module": SparseQuantNeuralNetwork,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "max_epochs": AUTO_EPOCHS,
        "batch_size": 64,
        "train_split": None,
        "verbose": 0,
        "iterator_train": BatchIndexedLoader,
        "iterator_train__shuffle": True,
        "iterator_valid": BatchIndexedLoader,
        "torch_load_kwargs": {"weights_only": True},
    }
    return {**defaults, **kwargs}


class NeuralNetClassifier(FHEEstimatorMixin, skorch.NeuralNetClassifier):
    """Quantization-aware MLP classifier whose predictions can run on encrypted data.

    Module parameters are given with the ``module__`` prefix (``module__n_layers``,
    ``module__n_w_bits``, ``module__n_a_bits``, ``module__n_accum_bits``, ...);
    ``input_dim`` and ``n_outputs`` are inferred from the data. Labels may be of any type.
    Settings the integer model cannot run (an unknown ``module__`` name, a 1-bit grid, an
    activation without an integer form) raise ValueError in ``fit``, before training.

    Three module defaults follow the input's width (``SparseQuantNeuralNetwork`` says why):
    the input grid has 5 bits on at most 16 features, else 4, and at least ``n_a_bits``
    (``module__n_input_bits``); on more than 24 features the accumulators get 9 bits instead
    of 8 when they are rounded (``module__n_accum_bits``; the default rounding) and structured
    pruning removes 60% of each hidden layer's neurons instead of none
    (``module__n_prune_neurons_percentage``). A value you set wins.

    With ``train_split`` (e.g. skorch's ``ValidSplit(5)``), skorch's ``valid_acc`` and any
    ``EpochScoring`` score the network as it trains; during fit, ``predict`` answers with
    class indices, as skorch's encoded targets are.

    Parameters
    ----------
    random_state : int or None
        Seeds torch for the fit: the same seed gives the same model.
    class_weight : None, "balanced" or dict
        Weight of each class's rows in the loss, times ``sample_weight``: a dict
        ``{label: weight}`` keyed by the labels of ``y`` (classes it leaves out weigh 1), or
        ``"balanced"``: ``n_rows / (n_classes · count)`` over the classes of each ``fit`` (or
        ``partial_fit``) call's ``y``. Invalid values raise ValueError in ``fit``.
    max_epochs : int or "auto"
        Epochs of each ``fit`` (and ``partial_fit`` call). ``"auto"`` (the default): at least
        50, and at least enough for 1,000 optimizer steps on the rows given, so a small data
        set trains as long as a large one (iris: 500 epochs). The epochs trained are in
        ``training_epochs_``. The learning rate stays at ``lr`` for the first half of them,
        while the pruning masks move, then anneals towards 0 (the default callback
        ``annealed_learning_rate``; a skorch ``LRScheduler`` of yours replaces it).
    rounding_threshold_bits : int, "auto" or None
        Round every hidden accumulator before its table lookup (``round_bit_pattern``: cheaper
        bootstraps), and train with that rounding: the network learns around it, and the
        integer model, its simulation and FHE compute exactly what the trained network does.
        An integer keeps that many most significant bits of each layer's certified range, so
        each lookup runs at that precision at most; ``"auto"`` (the default) keeps
        ``n_a_bits + 2``. None keeps the exact accumulators (the seed's behaviour). Invalid
        values raise ValueError in ``fit``.
    limit_weight_lr : bool
        With Adam or a variant (the default optimizer; AdamW, Adamax, NAdam, RAdam), train each
        layer's weights at no more than ``1/(32·√fan_in)`` when ``lr`` is higher (the default;
        quantizer scales and biases keep ``lr``): Adam moves a weight by about ``lr`` per step,
        and a wider layer's weights are smaller, so a step flips more of their few-bit
        integers. It binds no layer of up to 976 inputs at the default lr; at lr 1e-2 it is
        what keeps MNIST-5k near scikit-learn's MLP (``network.WEIGHT_LR_LIMIT`` has the
        measurements). Other optimizers (SGD: a step of ``lr`` times the gradient) and False
        train every parameter at ``lr``.
    n_networks : int
        How many networks to train and average (1 to 64; the default 1 trains one). Each
        network has its own weight and activation quantizers and its own loss; they share the
        input grid and the batches. One circuit computes them side by side, at ``n_networks``
        times one network's bootstraps, and the client averages their dequantized outputs.
        Why: on a small training set the seed moves test rows either way. At the defaults,
        iris missed scikit-learn's MLP by one row of 38 on 3 of 20 seeds, 3 networks on 1;
        they also raised the worst seed of breast_cancer, digits and diabetes, but not of
        wine (README, the training section).
    **kwargs
        Any skorch ``NeuralNetClassifier`` argument.
    """

    def __init__(
        self,
        random_state=None,
        rounding_threshold_bits="auto",
        class_weight=None,
        limit_weight_lr=True,
        n_networks=1,
        **kwargs,
    ):
        kwargs = estimator_defaults(torch.nn.CrossEntropyLoss, kwargs)
        super().__init__(**kwargs)
        self._replace_torch_compile()
        self.random_state = random_state
        self.rounding_threshold_bits = rounding_threshold_bits
        self.class_weight = class_weight
        self.limit_weight_lr = limit_weight_lr
        self.n_networks = n_networks

    @property
    def classes_(self):
        check_is_fitted(self, "label_encoder_")
        return self.label_encoder_.classes_

    def _encode_target(self, y, n_samples, new_targets: bool, classes=None):
        """Class indices of ``y``. New targets take their classes from ``classes`` (a
        ``partial_fit`` argument), else skorch's ``classes`` parameter, else ``y``; otherwise
        the fitted classes stay, and a label outside them is refused."""
        y = column_or_1d(np.asarray(y), warn=True)
        if len(y) != n_samples:
            raise ValueError(f"X has {n_samples} samples but y has {len(y)}.")
        check_classification_targets(y)
        if new_targets:
            declared = self.classes if classes is None else classes
            self.label_encoder_ = LabelEncoder().fit(y if declared is None else declared)
            if len(self.classes_) < 2:
                raise ValueError("The classifier needs at least 2 classes in y; got 1 class.")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={list(classes)!r} differs from the classes fixed by the first "
                f"partial_fit call, {self.classes_.tolist()!r}."
            )
        unknown = set(np.unique(y).tolist()) - set(self.classes_.tolist())
        if unknown:
            raise ValueError(
                f"y has labels {sorted(unknown, key=str)!r} that are not among the classes "
                f"{self.classes_.tolist()!r}; give every label to the first partial_fit call "
                "(classes=[...]) or to the constructor (classes=[...])."
            )
        return self.label_encoder_.transform(y).astype(np.int64), len(self.classes_)

    def _target_weights(self, targets: np.ndarray) -> np.ndarray:
        return class_row_weights(self.class_weight, targets, self.classes_)

    def _declare_targets(self, n_outputs: int) -> None:
        if self.classes is None or len(self.classes) != n_outputs:
            raise ValueError(
                f"This classifier was never fitted: give it classes=[...], the {n_outputs} "
                "labels of the loaded network's outputs, in order."
            )
        self.label_encoder_ = LabelEncoder().fit(self.classes)

    def predict_proba(self, X, execute_in_fhe: bool = False, fhe: str | None = None):
        """Class probabilities from the integer model (``fhe``: disable, simulate, execute)."""
        return softmax(self._network_output(X, execute_in_fhe, fhe))

    def predict(self, X, execute_in_fhe: bool = False, fhe: str | None = None):
        """Labels from the integer model, in the clear, simulated or encrypted (during fit,
        class indices from the network being trained: see the class docstring)."""
        codes = self.predict_proba(X, execute_in_fhe, fhe).argmax(axis=1)
        return codes if self._in_training else self.classes_[codes]


class NeuralNetRegressor(FHEEstimatorMixin, skorch.NeuralNetRegressor):
    """Quantization-aware MLP regressor whose predictions can run on encrypted data.

    Targets may be 1-D (predictions are 1-D) or 2-D (one network output per column).
    See :class:`NeuralNetClassifier` for the parameters.
    """

    def __init__(
        self,
        random_state=None,
        rounding_threshold_bits="auto",
        limit_weight_lr=True,
        n_networks=1,
        **kwargs,
    ):
        kwargs = estimator_defaults(torch.nn.MSELoss, kwargs)
        super().__init__(**kwargs)
        self._replace_torch_compile()
        self.random_state = random_state
        self.rounding_threshold_bits = rounding_threshold_bits
        self.limit_weight_lr = limit_weight_lr
        self.n_networks = n_networks

    def _encode_target(self, y, n_samples, new_targets: bool, classes=None):
        """float32 targets, one column per network output; a partial_fit keeps the columns."""
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
        y_2d = y.reshape(len(y), -1)
        if not new_targets and y_2d.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y_2d.shape[1]} target columns; the network was fitted on "
                f"{self.n_outputs_}."
            )
        self.target_ndim_ = y.ndim
        return y_2d, y_2d.shape[1]

    def _declare_targets(self, n_outputs: int) -> None:
        self.target_ndim_ = 1 if n_outputs == 1 else 2

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
