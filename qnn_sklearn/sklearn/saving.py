"""Write a fitted estimator as JSON and ``.npy`` arrays in a zip: no pickle.

Layout of the zip::

    manifest.json    format and package versions, the estimator class, its constructor
                     parameters, the network's constructor arguments, hidden widths (pruning
                     changes them) and rounding plan, the fitted attributes, and the error
                     probabilities of the last compile (``compile_options``, null if none)
    module/<i>.npy   one tensor of the network's state_dict each, written with
                     ``allow_pickle=False``

Networks averaged by ``n_networks`` have a list ``networks`` in the manifest instead of
``network``, one entry per network, and their tensors under ``networks/<k>/<i>.npy``.

Classes among the parameters (activation, optimizer, criterion, ...) are stored as import paths
``"module:qualname"``. :mod:`.persistence` reads such a file back without trusting it. Writing
needs nothing of the estimators' own modules, so they can import this one.

The integer model is not saved: ``load`` imports it again from the network, which makes its
rounding plan from its weights (``SparseQuantNeuralNetwork.rounding_plan``). The plan saved
beside them is what the integer model was built with, and ``load`` refuses a file whose weights
make another. The circuit is not saved either; of its compile options, only the error
probabilities are (:data:`qnn_sklearn.quantization.compile_options.SAVED_FIELDS` says why).
``rounding_plan`` and ``compile_options`` came after format version 1 was first written:
files without them still load, unchecked and with the default error probabilities.
"""

from __future__ import annotations

import inspect
import io
import json
import zipfile
from typing import Protocol

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .. import __version__, file_format
from ..quantization.compile_options import CompileOptions
from ..quantization.module import QuantizedModule
from ..quantization.rounding import RoundingPlan
from ..torch.averaged import AveragedNetworks
from ..torch.network import SparseQuantNeuralNetwork
from .import_paths import importable_path

FORMAT_NAME = "qnn_sklearn.estimator"
FORMAT_VERSION = 2
"""Raised whenever the layout, or what a saved setting means, changes; a file of another
version is refused, not guessed at. 2: a rounded layer's budget leaves room for the
rounding's carry (network.layer_budgets), so a network of version 1 would load with weights
cut to the narrower budget: another function."""

MANIFEST = "manifest.json"
FITTED_INTEGERS = ("n_features_in_", "n_outputs_", "target_ndim_")
"""Fitted integer attributes saved in ``manifest["fitted"]``."""


class DumpableEstimator(Protocol):
    """What ``dump`` reads of an estimator: scikit-learn's parameters, skorch's network and the
    integer model (for its compile options)."""

    module_: SparseQuantNeuralNetwork | AveragedNetworks
    quantized_module_: QuantizedModule

    def get_params(self, deep: bool = True) -> dict: ...


def dump(estimator: DumpableEstimator, file) -> None:
    """Write a fitted estimator to ``file`` (a path or a binary file object).

    Every value is checked before the file is opened, so a parameter that cannot be saved
    leaves no half-written file behind.
    """
    check_is_fitted(estimator)
    module = estimator.module_
    if isinstance(module, SparseQuantNeuralNetwork):
        spec, arrays = _network_spec(module, "module/")
        entries = {"network": spec}
    elif isinstance(module, AveragedNetworks):
        specs = [_network_spec(net, f"networks/{k}/") for k, net in enumerate(module.networks)]
        entries = {"networks": [spec for spec, _ in specs]}
        arrays = {member: array for _, saved in specs for member, array in saved.items()}
    else:
        raise ValueError(
            f"dump saves estimators whose module is SparseQuantNeuralNetwork (or networks "
            f"averaged by n_networks); this one has {type(module).__name__}."
        )
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "qnn_sklearn_version": __version__,
        "estimator": importable_path(type(estimator), "the estimator class"),
        # Names starting with "_" are skorch's bookkeeping, which the constructor rebuilds.
        "params": {
            name: _encode(value, f"parameter {name!r}")
            for name, value in estimator.get_params(deep=False).items()
            if not name.startswith("_")
        },
        **entries,
        "fitted": _fitted_to_json(estimator),
        "compile_options": _compile_options_to_json(_compile_options(estimator)),
    }
    with _open_zip_for_writing(file) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
        for member, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            archive.writestr(member, buffer.getvalue())


def _network_spec(network: SparseQuantNeuralNetwork, prefix: str) -> tuple[dict, dict]:
    """One network's manifest entry, and its tensors by the member names (``prefix<i>.npy``)
    the entry gives them."""
    state = {name: tensor.detach().cpu().numpy() for name, tensor in network.state_dict().items()}
    files = {name: f"{prefix}{index}.npy" for index, name in enumerate(state)}
    spec = {
        "init_kwargs": _encode(network.rebuild_kwargs, "the network's init_kwargs"),
        "hidden_widths": network.hidden_widths(),
        "rounding_plan": _rounding_plan_to_json(network.rounding_plan()),
        "state": files,
    }
    return spec, {files[name]: array for name, array in state.items()}


def _compile_options(estimator) -> CompileOptions | None:
    """The options of the estimator's last compile: its integer model's, or, until it is
    compiled again, those of the file it was loaded from (``saved_compile_options_``)."""
    module = estimator.quantized_module_
    if module.is_compiled:
        return module.compile_options
    return getattr(estimator, "saved_compile_options_", None)


def _rounding_plan_to_json(plan: RoundingPlan | None) -> dict | None:
    return None if plan is None else {"lsbs": list(plan.lsbs)}


def _compile_options_to_json(options: CompileOptions | None) -> dict | None:
    return None if options is None else options.to_json()


def _open_zip_for_writing(file) -> zipfile.ZipFile:
    if isinstance(file, io.TextIOBase):
        raise TypeError("Open the file in binary mode ('wb' to dump).")
    return zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED)


def _encode(value, where: str):
    """``value`` as JSON: scalars as they are, containers and callables as tagged objects."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_encode(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return {"kind": type(value).__name__, "value": items}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        items = {key: _encode(item, f"{where}[{key!r}]") for key, item in value.items()}
        return {"kind": "dict", "value": items}
    if inspect.isclass(value) or inspect.isfunction(value):
        return {"kind": "import", "value": importable_path(value, where)}
    raise ValueError(
        f"Cannot dump {where} = {value!r}: only None, numbers, strings, lists, tuples, dicts "
        "with string keys and importable classes or functions are saved without pickle. "
        "set_params it to such a value before dump, and back after load."
    )


def _fitted_to_json(estimator) -> dict:
    fitted = {
        name: int(getattr(estimator, name)) for name in FITTED_INTEGERS if hasattr(estimator, name)
    }
    if hasattr(estimator, "feature_names_in_"):
        fitted["feature_names_in_"] = [str(name) for name in estimator.feature_names_in_]
    if hasattr(estimator, "label_encoder_"):
        fitted["classes"] = file_format.labels_to_json(estimator.label_encoder_.classes_)
    return fitted
