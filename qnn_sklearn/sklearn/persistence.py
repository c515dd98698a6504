"""Save a fitted estimator as JSON and ``.npy`` arrays in a zip, and load it back: no pickle.

Layout of the zip::

    manifest.json    format and package versions, the estimator class, its constructor
                     parameters, the network's constructor arguments and hidden widths (pruning
                     changes them) and the fitted attributes
    module/<i>.npy   one tensor of the network's state_dict each, written and read with
                     ``allow_pickle=False``

Classes and functions among the parameters (activation, optimizer, criterion, ...) are stored as
import paths ``"module:qualname"``; loading imports those modules and accepts only a class or a
function. Nothing is unpickled, but training again calls those classes: load files from sources
you would take code from. The FHE circuit is not saved: call ``compile(X)`` after loading.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import zipfile

import numpy as np
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from .fhe_estimator import FHEEstimatorMixin
from .qnn_module import SparseQuantNeuralNetwork, _rebuild

FORMAT_NAME = "qnn_sklearn.estimator"
FORMAT_VERSION = 1
"""Raised whenever the layout changes; a file of another version is refused, not guessed at."""

MANIFEST = "manifest.json"
_LABEL_DTYPE_KINDS = "biufUO"
"""numpy dtype kinds whose values a JSON list holds exactly (bool, int, float, str, object)."""
_FITTED_INTEGERS = ("n_features_in_", "n_outputs_", "target_ndim_")


def dump(estimator: FHEEstimatorMixin, file) -> None:
    """Write a fitted estimator to ``file`` (a path or a binary file object).

    Every value is checked before the file is opened, so a parameter that cannot be saved
    leaves no half-written file behind.
    """
    check_is_fitted(estimator)
    network = estimator.module_
    if not isinstance(network, SparseQuantNeuralNetwork):
        raise ValueError(
            f"dump saves estimators whose module is SparseQuantNeuralNetwork; this one has "
            f"{type(network).__name__}."
        )
    state = {name: tensor.detach().cpu().numpy() for name, tensor in network.state_dict().items()}
    files = {name: f"module/{index}.npy" for index, name in enumerate(state)}
    # prune() sets the percentage on the network after construction.
    init_kwargs = {
        **network.init_kwargs,
        "n_prune_neurons_percentage": network.n_prune_neurons_percentage,
    }
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "qnn_sklearn_version": __version__,
        "estimator": _import_path(type(estimator), "the estimator class"),
        # Names starting with "_" are skorch's bookkeeping, which the constructor rebuilds.
        "params": {
            name: _encode(value, f"parameter {name!r}")
            for name, value in estimator.get_params(deep=False).items()
            if not name.startswith("_")
        },
        "network": {
            "init_kwargs": _encode(init_kwargs, "the network's init_kwargs"),
            "hidden_widths": network.hidden_widths(),
            "state": files,
        },
        "fitted": _fitted_to_json(estimator),
    }
    with _open_zip(file, "w") as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
        for name, array in state.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            archive.writestr(files[name], buffer.getvalue())


def load(file) -> FHEEstimatorMixin:
    """Read an estimator written by ``dump``: fitted, ready to predict; compile it again for FHE.

    Parameters
    ----------
    file : str, path-like or binary file object
        What ``estimator.dump`` wrote.
    """
    with _open_zip(file, "r") as archive:
        manifest = _read_manifest(archive)
        estimator_class = _import_object(manifest["estimator"], "the estimator class")
        if not (
            isinstance(estimator_class, type) and issubclass(estimator_class, FHEEstimatorMixin)
        ):
            raise ValueError(f"{manifest['estimator']!r} is not a qnn_sklearn estimator class.")
        params = {
            name: _decode(value, f"parameter {name!r}")
            for name, value in manifest["params"].items()
        }
        network_spec = manifest["network"]
        state = {
            name: torch.from_numpy(np.load(io.BytesIO(archive.read(path)), allow_pickle=False))
            for name, path in network_spec["state"].items()
        }
    estimator = estimator_class(**params)
    _restore_fitted(estimator, manifest["fitted"])
    init_kwargs = _decode(network_spec["init_kwargs"], "the network's init_kwargs")
    network = _rebuild(init_kwargs, network_spec["hidden_widths"], state).eval()
    _install_network(estimator, network)
    return estimator


def _install_network(estimator: FHEEstimatorMixin, network: SparseQuantNeuralNetwork) -> None:
    """What ``fit`` leaves behind: skorch's components, the trained network, its integer model.

    skorch's ``initialize`` builds a fresh network too (it consumes random numbers, hence the
    forked generator); the trained one replaces it and the optimizer is rebuilt to train it.
    """
    with torch.random.fork_rng():
        estimator.initialize()
    estimator.module_ = network
    estimator.initialize_optimizer()
    estimator._import_integer_model()


# -- the zip and its manifest ------------------------------------------------------------------


def _open_zip(file, mode: str) -> zipfile.ZipFile:
    if isinstance(file, io.TextIOBase):
        raise TypeError("Open the file in binary mode ('wb' to dump, 'rb' to load).")
    try:
        return zipfile.ZipFile(file, mode, compression=zipfile.ZIP_DEFLATED)
    except zipfile.BadZipFile:
        raise ValueError("This is not a file written by dump (not a zip archive).") from None


def _read_manifest(archive: zipfile.ZipFile) -> dict:
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise ValueError(f"This zip has no {MANIFEST}: it was not written by dump.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{MANIFEST} does not describe a {FORMAT_NAME} file.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"This file has format version {version!r} (written by qnn_sklearn "
            f"{manifest.get('qnn_sklearn_version')}); qnn_sklearn {__version__} reads format "
            f"version {FORMAT_VERSION}. Load it with the qnn_sklearn version that wrote it."
        )
    return manifest


# -- parameters: JSON values and import paths -------------------------------------------------


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
        return {"kind": "import", "value": _import_path(value, where)}
    raise ValueError(
        f"Cannot dump {where} = {value!r}: only None, numbers, strings, lists, tuples, dicts "
        "with string keys and importable classes or functions are saved without pickle. "
        "set_params it to such a value before dump, and back after load."
    )


def _decode(value, where: str):
    if not isinstance(value, dict):
        return value
    kind, items = value.get("kind"), value.get("value")
    if kind in ("list", "tuple"):
        decoded = [_decode(item, f"{where}[{index}]") for index, item in enumerate(items)]
        return decoded if kind == "list" else tuple(decoded)
    if kind == "dict":
        return {key: _decode(item, f"{where}[{key!r}]") for key, item in items.items()}
    if kind == "import":
        return _import_object(items, where)
    raise ValueError(f"{where} has an unknown kind {kind!r} in {MANIFEST}.")


def _import_path(obj, where: str) -> str:
    """``"module:qualname"`` of ``obj``, checked to import back to the very same object."""
    path = f"{obj.__module__}:{obj.__qualname__}"
    try:
        found = _import_object(path, where)
    except ValueError:
        found = None
    if found is not obj:
        raise ValueError(
            f"Cannot dump {where} = {obj!r}: importing {path!r} does not give it back "
            "(defined inside a function, or redefined since). Define it at the top level of "
            "a module."
        )
    return path


def _import_object(path: str, where: str):
    """The class or function at ``path``; anything else is refused."""
    module_name, _, qualname = str(path).partition(":")
    if not module_name or not qualname:
        raise ValueError(f"{where}: {path!r} is not an import path 'module:qualname'.")
    try:
        obj = importlib.import_module(module_name)
        for attribute in qualname.split("."):
            obj = getattr(obj, attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"{where}: cannot import {path!r} ({error}); install what defines it."
        ) from None
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise ValueError(
            f"{where}: {path!r} is a {type(obj).__name__}, not a class or a function; "
            "refusing to load it."
        )
    return obj


# -- fitted attributes -------------------------------------------------------------------------


def _fitted_to_json(estimator) -> dict:
    fitted = {
        name: int(getattr(estimator, name)) for name in _FITTED_INTEGERS if hasattr(estimator, name)
    }
    if hasattr(estimator, "feature_names_in_"):
        fitted["feature_names_in_"] = [str(name) for name in estimator.feature_names_in_]
    if hasattr(estimator, "label_encoder_"):
        fitted["classes"] = _labels_to_json(estimator.label_encoder_.classes_)
    return fitted


def _restore_fitted(estimator, fitted: dict) -> None:
    for name in _FITTED_INTEGERS:
        if name in fitted:
            setattr(estimator, name, int(fitted[name]))
    if "feature_names_in_" in fitted:
        estimator.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    if "classes" in fitted:
        estimator.label_encoder_ = LabelEncoder()
        estimator.label_encoder_.classes_ = _labels_from_json(fitted["classes"])


def _labels_to_json(classes: np.ndarray) -> dict:
    """Class labels as a JSON list and their numpy dtype, so ``predict`` returns the same type."""
    kind = classes.dtype.kind
    if kind not in _LABEL_DTYPE_KINDS or (
        kind == "O" and not all(isinstance(label, str) for label in classes)
    ):
        raise ValueError(
            f"Cannot dump class labels of dtype {classes.dtype} ({classes[:3].tolist()}...): "
            "dump saves numbers, booleans and strings. Fit on labels of one of those types."
        )
    return {"dtype": classes.dtype.str, "values": classes.tolist()}


def _labels_from_json(labels: dict) -> np.ndarray:
    dtype = np.dtype(labels["dtype"])
    if dtype.kind not in _LABEL_DTYPE_KINDS:
        raise ValueError(f"Class labels of dtype {dtype} are not something dump writes.")
    return np.asarray(labels["values"], dtype=dtype)
