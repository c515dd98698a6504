"""What both estimators share: validation, training with pruning, the integer model, FHE."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import PrintLog
from skorch.history import History
from skorch.utils import get_map_location, is_dataset, to_numpy

from ..quantization.bounds import check_certified_bits
from ..quantization.module import FHE_MODES
from ..quantization.tabulation import bootstraps
from ..torch import build_brevitas_qat_model
from ..torch.averaged import AveragedNetworks, check_n_networks
from ..torch.network import SparseQuantNeuralNetwork
from .callbacks import QuietPrintLog, training_callbacks
from .dense_rows import dense_rows
from .fused_optimizer import fused_by_default
from .module_checks import check_activation_imports, check_module_params
from .row_weights import (
    INPUTS,
    WEIGHTS,
    row_weights,
    takes_reduction,
    weighted_loss,
    weighted_rows,
)
from .saving import dump
from .training_length import training_epochs
from .training_threads import training_threads
from .weight_lr import limited_weight_groups, limits_apply

MODULE_DEFAULTS = {"n_layers": 3}
"""Module arguments with a default here; ``input_dim`` and ``n_outputs`` come from the data."""


def resolve_fhe_mode(execute_in_fhe: bool, fhe: str | None) -> str:
    """``fhe`` wins; ``execute_in_fhe=True`` is the older spelling of ``fhe="execute"``."""
    if fhe is None:
        return "execute" if execute_in_fhe else "disable"
    if fhe not in FHE_MODES:
        raise ValueError(f"fhe must be one of {FHE_MODES}, got {fhe!r}.")
    if execute_in_fhe and fhe != "execute":
        raise ValueError(f"execute_in_fhe=True contradicts fhe={fhe!r}; pass only one.")
    return fhe


TRAINED_NETWORKS = (SparseQuantNeuralNetwork, AveragedNetworks)
"""The modules that train with their rounding and pruning, and rebuild to a saved layout."""


def _is_subclass(module, cls: type) -> bool:
    """Whether skorch's ``module`` setting is the class ``cls`` or a subclass (not an instance)."""
    return isinstance(module, type) and issubclass(module, cls)


class FHEEstimatorMixin:
    """Mixed into skorch's NeuralNetClassifier / NeuralNetRegressor (it comes first in the MRO).

    Subclasses define ``_encode_target(y, n_samples, new_targets, classes)`` (returns the
    torch target and the number of network outputs; ``new_targets``: choose the encoding,
    else keep the fitted one) and ``_declare_targets(n_outputs)`` (the fitted target facts of
    an estimator that loads a network without fitting).
    """

    # -- skorch hooks --------------------------------------------------------------------------

    def _replace_torch_compile(self):
        """skorch stores a ``compile`` flag (torch.compile) that would hide :meth:`compile`.

        A Brevitas network must stay a plain module to be exported, so the flag goes.
        """
        if self.__dict__.pop("compile", False):
            raise ValueError(
                "compile=True (torch.compile) is not supported; compile(X) builds the FHE circuit."
            )

    def torch_compile(self, module, name):
        return module

    def get_default_callbacks(self):
        """skorch's, with its ``print_log`` quiet at ``verbose=0`` (callbacks.QuietPrintLog),
        then the training callbacks."""
        skorchs = [
            (name, QuietPrintLog() if type(callback) is PrintLog else callback)
            for name, callback in super().get_default_callbacks()
        ]
        return [*skorchs, *training_callbacks()]

    def get_params_for(self, prefix):
        params = super().get_params_for(prefix)
        if prefix == "criterion" and takes_reduction(self.criterion):
            # get_loss averages the per-row losses with the rows' weights
            return {**params, "reduction": "none"}
        if prefix == "module" and isinstance(self.module, type):
            check_module_params(self.module, params)
        if prefix == "module" and _is_subclass(self.module, SparseQuantNeuralNetwork):
            params = {**MODULE_DEFAULTS, **params}
            for name, fitted in (("input_dim", "n_features_in_"), ("n_outputs", "n_outputs_")):
                if name not in params and not hasattr(self, fitted):
                    raise NotFittedError(
                        f"The network's sizes come from the data: fit {type(self).__name__} "
                        "first, or give module__input_dim and module__n_outputs to initialize()."
                    )
                params.setdefault(name, getattr(self, fitted, None))
            params.setdefault("rounding_threshold_bits", self.rounding_threshold_bits)
        return params

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's, with each weight of a SparseQuantNeuralNetwork at no more than its layer's
        learning-rate limit while ``limit_weight_lr`` is True and the optimizer is Adam or a
        variant (network.WEIGHT_LR_LIMIT and weight_lr.STEP_SIZED_OPTIMIZERS say why), and
        the optimizer's fused kernel unless the user chose an implementation
        (fused_optimizer.py).

        skorch's ``set_params(lr=...)`` on a fitted estimator sets every group to that ``lr``;
        the limits come back when the optimizer is built again: by ``fit``, and as each
        ``partial_fit`` begins (the default callback ``pruning_masks`` rebuilds it).
        """
        if not isinstance(self.limit_weight_lr, bool):
            raise ValueError(
                f"limit_weight_lr must be True or False, got {self.limit_weight_lr!r}."
            )
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        kwargs = fused_by_default(self.optimizer, kwargs)
        limited = self.limit_weight_lr and limits_apply(self.optimizer)
        if limited and isinstance(self.module_, SparseQuantNeuralNetwork):
            limits = self.module_.weight_lr_limits()
            args = (limited_weight_groups(args[0], kwargs["lr"], limits), *args[1:])
        return args, kwargs

    def _set_training(self, training=True):
        """skorch's, skipped for a module already in that mode: skorch sets the mode before
        every step, and ``train()`` walks each of the Brevitas network's hundreds of
        submodules (0.19 ms a call in the network's flat walk; 2 ms, 12% of a breast_cancer
        fit, through ``nn.Module.train`` before it had one)."""
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, torch.nn.Module) and module.training != training:
                module.train(training)

    def infer(self, x, **fit_params):
        """skorch's, given the inputs of the training rows only (not their weights)."""
        if isinstance(x, Mapping):
            x = x[INPUTS]
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion's per-row losses, averaged with the rows' weights (``sample_weight``
        times ``class_weight``); equal weights give the criterion's mean. Averaged networks in
        training (``n_networks``) give one output per network: each network's losses, summed,
        so that each trains on its own."""
        if isinstance(self.module_, AveragedNetworks) and y_pred.dim() == 3:
            losses = 0
            for index in range(y_pred.shape[1]):
                losses = losses + super().get_loss(y_pred[:, index], y_true, X, training)
        else:
            losses = super().get_loss(y_pred, y_true, X=X, training=training)
        return weighted_loss(losses, X[WEIGHTS] if isinstance(X, Mapping) else None, self.criterion)

    def initialize_module(self):
        """skorch's, then a check that the integer model will import the network's activation
        (a ValueError now, instead of after training), and ``n_networks`` of them averaged
        when asked (the first is the network a single fit would train)."""
        n_networks = check_n_networks(self.n_networks)
        super().initialize_module()
        if isinstance(self.module_, SparseQuantNeuralNetwork):
            check_activation_imports(self.module_)
            if n_networks > 1:
                self.module_ = AveragedNetworks.of(self.module_, n_networks)
        elif n_networks > 1:
            raise ValueError(
                f"n_networks={n_networks} averages SparseQuantNeuralNetworks; this estimator's "
                f"module is {type(self.module_).__name__}. Set n_networks=1 for it."
            )
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "quantized_module_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -- training ------------------------------------------------------------------------------

    _in_training = False
    """True while skorch's training loop runs: scorers then get the trained network's output
    (see :meth:`_network_output`)."""

    def _validate_X(self, X, reset: bool) -> np.ndarray:
        """Validated float32 rows (a scipy sparse X made dense: :func:`dense_rows`)."""
        X = validate_data(self, X, reset=reset, accept_sparse=True, dtype=[np.float64, np.float32])
        return dense_rows(X, type(self).__name__)

    def _target_weights(self, targets: np.ndarray) -> np.ndarray | float:
        """How much each row counts for its target: 1 (the classifier weighs classes)."""
        return 1.0

    def _train(
        self, X, y, reset: bool, reinitialize: bool, classes=None, sample_weight=None, **fit_params
    ):
        """Validate, encode the target, (re)initialize if asked, train, finish training.

        The targets are encoded anew when the network is (re)initialized or has none yet;
        otherwise (partial_fit, a warm start) they keep the encoding the network has. The rows
        reach skorch with their weights (row_weights.py). skorch's own ``fit`` would call our
        ``partial_fit`` again with the encoded target, so both paths come here and call
        skorch's ``partial_fit`` once.
        """
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        X = self._validate_X(X, reset=reset)
        epochs = fit_params.pop("epochs", None)  # skorch's override of max_epochs
        if epochs is None:
            epochs = training_epochs(self.max_epochs, len(X), self.batch_size)
        self.training_epochs_ = epochs
        new_targets = reinitialize or not hasattr(self, "n_outputs_")
        y_torch, self.n_outputs_ = self._encode_target(y, len(X), new_targets, classes)
        weights = row_weights(sample_weight, len(X), self._target_weights(y_torch))
        with torch.random.fork_rng():
            if self.random_state is not None:
                torch.manual_seed(self.random_state)
            if reinitialize or not self.initialized_:
                self.initialize()
            self._in_training = True
            try:
                with training_threads(self.module_):
                    super().partial_fit(
                        weighted_rows(X, weights), y_torch, epochs=epochs, **fit_params
                    )
            finally:
                self._in_training = False
        self._finish_training()
        return self

    def _finish_training(self) -> None:
        """The end of training, once every callback's ``on_train_end`` has run (and after a
        ``load_params`` outside of fit): the masks baked into the weights and dead neurons
        removed, then the integer model imported from that network."""
        self.module_.make_pruning_permanent()
        self._import_integer_model()

    def _import_integer_model(self) -> None:
        """``quantized_module_`` from the trained network (Brevitas' scales; no data needed:
        the export's sample row only gives the input shape). A SparseQuantNeuralNetwork
        trained with the rounding and brings it along; another module is rounded after
        training. A SparseQuantNeuralNetwork's certified accumulators must fit its
        ``n_accum_bits`` (the invariant its pruner keeps): AccumulatorOverflowError if not."""
        sample = np.zeros((1, self.n_features_in_), dtype=np.float32)
        trained_rounding = isinstance(self.module_, TRAINED_NETWORKS)
        self.quantized_module_ = build_brevitas_qat_model(
            self.module_,
            sample,
            rounding_threshold_bits=None if trained_rounding else self.rounding_threshold_bits,
        )
        if trained_rounding:
            check_certified_bits(self.quantized_module_.layers, self.module_.n_accum_bits)

    def fit(self, X, y, sample_weight=None, **fit_params):
        """Train (quantization-aware, pruned) and import the integer model.

        ``sample_weight`` (one weight ≥ 0 per row) weighs each row's loss, in training and in
        the validation loss.
        """
        reinitialize = not self.warm_start or not self.initialized_
        return self._train(
            X, y, reset=True, reinitialize=reinitialize, sample_weight=sample_weight, **fit_params
        )

    def partial_fit(self, X, y, classes=None, sample_weight=None, **fit_params):
        """Continue training for ``max_epochs`` epochs (``"auto"``: as ``fit`` would), then
        import the integer model.

        A classifier's first call fixes its classes: ``classes`` (all the labels later calls
        may bring) or else the labels of this ``y``.
        """
        first_call = not hasattr(self, "n_features_in_")
        return self._train(
            X,
            y,
            reset=first_call,
            reinitialize=False,
            classes=classes,
            sample_weight=sample_weight,
            **fit_params,
        )

    def load_params(
        self,
        f_params=None,
        f_optimizer=None,
        f_criterion=None,
        f_history=None,
        checkpoint=None,
        use_safetensors=False,
        **kwargs,
    ):
        """skorch's, for a network whose layout changes as it trains.

        A state saved while training (what Checkpoint, TrainEndCheckpoint and LoadInitState
        hold: every neuron, and the pruning masks) and one saved after fit (masks baked in,
        dead neurons removed) both load: the network is first rebuilt to the saved layout.
        Outside of fit, training then ends as after fit (masks baked in, the integer model
        imported), so ``predict`` answers with the loaded network; an estimator that was
        never fitted takes its sizes from the network (and a classifier the labels of its
        outputs from ``classes``).
        """
        files = {
            "f_params": f_params,
            "f_optimizer": f_optimizer,
            "f_criterion": f_criterion,
            "f_history": f_history,
            **kwargs,
        }
        if checkpoint is not None:
            if not self.initialized_:
                self.initialize()
            if f_history is None and checkpoint.f_history is not None:
                # the file names may be formatted with the history's epochs, as in skorch
                self.history = History.from_file(checkpoint.f_history_)
            given = {name: file for name, file in files.items() if file}
            files = {**checkpoint.get_formatted_files(self), **given}
        network_file = files.pop("f_params", None)
        rebuild = (
            network_file is not None
            and self.initialized_
            and isinstance(self.module_, TRAINED_NETWORKS)
        )
        if rebuild:
            self.module_ = self.module_.with_state(self._read_state(network_file, use_safetensors))
            self.initialize_optimizer()
            network_file = None
        super().load_params(f_params=network_file, use_safetensors=use_safetensors, **files)
        if rebuild and not self._in_training:
            if not hasattr(self, "n_outputs_"):
                self._adopt_network_sizes()
            self._finish_training()

    def _read_state(self, file, use_safetensors: bool) -> dict:
        """A state dict as skorch's ``load_params`` reads it with torch."""
        if use_safetensors:
            raise ValueError("use_safetensors: these estimators read their network with torch.")
        load_kwargs = self.torch_load_kwargs or {"weights_only": True}
        return torch.load(file, map_location=get_map_location(self.device), **load_kwargs)

    def _adopt_network_sizes(self) -> None:
        """An estimator that was never fitted takes what fit would have set from its network."""
        self.n_features_in_ = self.module_.init_kwargs["input_dim"]
        self.n_outputs_ = self.module_.init_kwargs["n_outputs"]
        self._declare_targets(self.n_outputs_)

    def prune(self, X, y, n_prune_neurons_percentage: float):
        """A copy fine-tuned on (X, y) whose hidden layers keep at most ``1 −
        n_prune_neurons_percentage`` of their width before any pruning (the neurons of largest
        weight norm): a share of the architecture, as the constructor's setting is, so 0.5 on
        a network that the default already pruned by 60% removes nothing more."""
        check_is_fitted(self)
        if not 0.0 <= n_prune_neurons_percentage < 1.0:
            raise ValueError("n_prune_neurons_percentage must be in [0, 1).")
        pruned = copy.deepcopy(self)
        pruned.module_.n_prune_neurons_percentage = n_prune_neurons_percentage
        pruned.module__n_prune_neurons_percentage = n_prune_neurons_percentage
        for attribute in ("fhe_circuit_",):
            pruned.__dict__.pop(attribute, None)
        return pruned.partial_fit(X, y)

    # -- the integer model and FHE -------------------------------------------------------------

    def compile(
        self,
        X,
        p_error: float | None = None,
        global_p_error: float | None = None,
        configuration=None,
        verbose: bool = False,
    ):
        """Build the FHE circuit, calibrated on ``X``; returns it (also ``fhe_circuit_``).

        Without ``p_error`` and ``global_p_error``, an estimator read by ``load`` compiles with
        the error probabilities it was saved with (``saved_compile_options_``).
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        saved = getattr(self, "saved_compile_options_", None)
        if saved is not None and p_error is None and global_p_error is None:
            p_error, global_p_error = saved.p_error, saved.global_p_error
        return self.quantized_module_.compile(
            X,
            configuration=configuration,
            p_error=p_error,
            global_p_error=global_p_error,
            verbose=verbose,
        )

    @property
    def fhe_circuit_(self):
        """The compiled circuit (rebuilt on first use after unpickling)."""
        module = self.__dict__.get("quantized_module_")
        if module is None or not module.is_compiled:
            raise AttributeError("fhe_circuit_ exists after compile(X).")
        return module.fhe_circuit

    def _network_output(self, X, execute_in_fhe: bool, fhe: str | None) -> np.ndarray:
        """The integer model's output; during fit, the output of the network being trained.

        The integer model is imported when training ends, so the scorers that skorch calls
        during fit (``EpochScoring``, such as the classifier's ``valid_acc``) score the
        trained (fake-quantized) network instead, in the clear, on what skorch hands them: a
        dataset, the training rows or an array.
        """
        mode = resolve_fhe_mode(execute_in_fhe, fhe)
        if self._in_training:
            if mode != "disable":
                raise RuntimeError("During fit there is no circuit yet: use fhe='disable'.")
            if not (is_dataset(X) or isinstance(X, Mapping)):
                X = self._validate_X(X, reset=False)
            return to_numpy(self.forward(X))
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        return self.quantized_module_.forward(X, fhe=mode, verbose=bool(self.verbose))

    def fhe_report(self) -> dict:
        """Per layer: certified accumulator bits, and the PBS count and precision of its lookup
        in the layered program. The totals, and ``lookups``, are those of the program the
        circuit runs (``program``: "layered", or "tabulated" when one table per output on the
        packed input is cheaper; see quantization/tabulation.py)."""
        check_is_fitted(self)
        module = self.quantized_module_
        layers = module.bitwidth_report()
        lookups = bootstraps(module.steps)
        report = {
            "layers": layers,
            "program": module.program,
            "lookups": lookups,
            "max_certified_bits": max(layer["certified_bits"] for layer in layers),
            "pbs_count": sum(lookup["count"] for lookup in lookups),
            "max_pbs_precision": max((lookup["precision"] for lookup in lookups), default=0),
        }
        if module.is_compiled:
            circuit = module.fhe_circuit
            report["circuit_pbs_count"] = int(circuit.programmable_bootstrap_count)
            report["circuit_max_bit_width"] = int(circuit.graph.maximum_integer_bit_width())
        return report

    def dump(self, file) -> None:
        """Save the fitted estimator without pickle (a path or a binary file object); read it
        back with :func:`qnn_sklearn.load`. The circuit is not saved: compile again after."""
        dump(self, file)
