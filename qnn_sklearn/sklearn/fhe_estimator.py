"""What both estimators share: validation, training with pruning, the integer model, FHE."""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data

from ..quantization.bounds import check_certified_bits
from ..quantization.module import FHE_MODES
from ..quantization.tabulation import bootstraps
from ..torch import build_brevitas_qat_model
from ..torch.network import SparseQuantNeuralNetwork
from .callbacks import pruning_callbacks
from .module_checks import check_activation_imports, check_module_params
from .saving import dump

MODULE_DEFAULTS = {"n_layers": 3}
"""Module arguments with a default here; ``input_dim`` and ``n_outputs`` come from the data."""


def estimator_defaults(criterion, kwargs: dict) -> dict:
    """skorch arguments of both estimators (quiet, shuffled, no hold-out split), then the
    user's ``kwargs`` on top."""
    defaults = {
        "criterion": criterion,
        "module": SparseQuantNeuralNetwork,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "max_epochs": 50,
        "batch_size": 64,
        "train_split": None,
        "verbose": 0,
        "iterator_train__shuffle": True,
        "torch_load_kwargs": {"weights_only": False},
    }
    return {**defaults, **kwargs}


def resolve_fhe_mode(execute_in_fhe: bool, fhe: str | None) -> str:
    """``fhe`` wins; ``execute_in_fhe=True`` is the older spelling of ``fhe="execute"``."""
    if fhe is None:
        return "execute" if execute_in_fhe else "disable"
    if fhe not in FHE_MODES:
        raise ValueError(f"fhe must be one of {FHE_MODES}, got {fhe!r}.")
    if execute_in_fhe and fhe != "execute":
        raise ValueError(f"execute_in_fhe=True contradicts fhe={fhe!r}; pass only one.")
    return fhe


def _is_subclass(module, cls: type) -> bool:
    """Whether skorch's ``module`` setting is the class ``cls`` or a subclass (not an instance)."""
    return isinstance(module, type) and issubclass(module, cls)


class FHEEstimatorMixin:
    """Mixed into skorch's NeuralNetClassifier / NeuralNetRegressor (it comes first in the MRO).

    Subclasses define ``_encode_target(y)`` (returns the torch target and the number of
    network outputs) and ``_output(raw)`` (network output → estimator answer).
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
        return [*super().get_default_callbacks(), *pruning_callbacks()]

    def get_params_for(self, prefix):
        params = super().get_params_for(prefix)
        if prefix == "module" and isinstance(self.module, type):
            check_module_params(self.module, params)
        if prefix == "module" and _is_subclass(self.module, SparseQuantNeuralNetwork):
            params = {**MODULE_DEFAULTS, **params}
            params.setdefault("input_dim", self.n_features_in_)
            params.setdefault("n_outputs", self.n_outputs_)
            params.setdefault("rounding_threshold_bits", self.rounding_threshold_bits)
        return params

    def initialize_module(self):
        """skorch's, then a check that the integer model will import the network's activation
        (a ValueError now, instead of after training)."""
        super().initialize_module()
        if isinstance(self.module_, SparseQuantNeuralNetwork):
            check_activation_imports(self.module_)
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "quantized_module_")

    # -- training ------------------------------------------------------------------------------

    def _validate_X(self, X, reset: bool) -> np.ndarray:
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32]).astype(
            np.float32
        )

    def _train(self, X, y, reset: bool, reinitialize: bool, **fit_params):
        """Validate, encode the target, (re)initialize if asked, train, import the integers.

        skorch's own ``fit`` would call our ``partial_fit`` again with the encoded target, so
        both paths come here and call skorch's ``partial_fit`` once.
        """
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        X = self._validate_X(X, reset=reset)
        y_torch, self.n_outputs_ = self._encode_target(y, len(X))
        with torch.random.fork_rng():
            if self.random_state is not None:
                torch.manual_seed(self.random_state)
            if reinitialize:
                self.initialize()
            super().partial_fit(X, y_torch, **fit_params)
        self._import_integer_model()
        return self

    def _import_integer_model(self) -> None:
        """``quantized_module_`` from the trained network (Brevitas' scales; no data needed:
        the export's sample row only gives the input shape). A SparseQuantNeuralNetwork
        trained with the rounding and brings it along; another module is rounded after
        training. A SparseQuantNeuralNetwork's certified accumulators must fit its
        ``n_accum_bits`` (the invariant its pruner keeps): AccumulatorOverflowError if not."""
        sample = np.zeros((1, self.n_features_in_), dtype=np.float32)
        trained_rounding = isinstance(self.module_, SparseQuantNeuralNetwork)
        self.quantized_module_ = build_brevitas_qat_model(
            self.module_,
            sample,
            rounding_threshold_bits=None if trained_rounding else self.rounding_threshold_bits,
        )
        if trained_rounding:
            check_certified_bits(self.quantized_module_.layers, self.module_.n_accum_bits)

    def fit(self, X, y, **fit_params):
        """Train (quantization-aware, pruned) and import the integer model."""
        reinitialize = not self.warm_start or not self.initialized_
        return self._train(X, y, reset=True, reinitialize=reinitialize, **fit_params)

    def partial_fit(self, X, y, classes=None, **fit_params):
        """Continue training for ``max_epochs`` epochs, then import the integer model."""
        first_call = not hasattr(self, "n_features_in_")
        return self._train(X, y, reset=first_call, reinitialize=False, **fit_params)

    def prune(self, X, y, n_prune_neurons_percentage: float):
        """A copy with that fraction of hidden neurons removed and fine-tuned on (X, y)."""
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
        """Build the FHE circuit, calibrated on ``X``; returns it (also ``fhe_circuit_``)."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
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
        check_is_fitted(self)
        mode = resolve_fhe_mode(execute_in_fhe, fhe)
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
