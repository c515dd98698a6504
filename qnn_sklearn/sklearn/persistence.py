"""Load an estimator written by ``dump`` (:mod:`.saving`, which describes the layout): no pickle.

A file may come from anyone, so ``load`` trusts nothing it declares:

- an import path is looked up in the allow-list of its parameter (:mod:`.trusted_types`) and
  is never imported; anything else is refused before any import or call, unless the caller
  lists it in ``load(file, trusted=[...])``;
- the archive is read through :mod:`qnn_sklearn.safe_zip`, which bounds every member as it
  inflates and every JSON member before parsing;
- the network's widths, layers and bit widths are bounded before anything is allocated, and
  each array's ``.npy`` header (dtype, shape) is checked against those widths and against
  the bytes the member really holds before its data is read;
- the rounding plan the loaded weights make must be the one saved with them, and the saved
  error probabilities must be probabilities.

The FHE circuit is not saved: call ``compile(X)`` after loading. The error probabilities of
the compile before ``dump`` come back as ``saved_compile_options_`` (a ``CompileOptions``
without configuration).
"""

from __future__ import annotations

import inspect
import io
import zipfile
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import torch
from sklearn.preprocessing import LabelEncoder

from .. import file_format, safe_zip
from ..quantization.compile_options import CompileOptions
from ..quantization.rounding import RoundingPlan
from ..torch.averaged import AveragedNetworks, check_n_networks
from ..torch.network import SparseQuantNeuralNetwork, rebuild_network
from .qnn import NeuralNetClassifier, NeuralNetRegressor
from .saved_network import (
    check_rounding_plan,
    checked_widths,
    network_widths,
    read_state,
    saved_rounding_plan,
)
from .saving import FITTED_INTEGERS, FORMAT_NAME, FORMAT_VERSION, MANIFEST
from .trusted_types import (
    ACTIVATION,
    ESTIMATOR,
    PARAMETER_ROLES,
    builtin_allow_list,
    resolve_trusted,
)

Estimator = NeuralNetClassifier | NeuralNetRegressor


MAX_NESTING = 16
"""Deepest nesting of lists and dicts in a saved parameter."""


def load(file, trusted: Iterable | None = None) -> Estimator:
    """Read an estimator written by ``dump``: fitted, ready to predict; compile it again for FHE.

    The file is not trusted: every class it names must be on the allow-list of its parameter
    (:mod:`qnn_sklearn.sklearn.trusted_types`) and every size it declares within the limits
    of this module and of :mod:`qnn_sklearn.safe_zip`; otherwise ``ValueError``, raised
    before anything the file names is imported or called.

    Parameters
    ----------
    file : str, path-like or binary file object
        What ``estimator.dump`` wrote.
    trusted : iterable of classes, functions or "module:qualname" strings, optional
        Your own classes or functions that the file may name (a custom loss, callback or
        estimator subclass), accepted in any parameter. Strings are imported when ``load``
        starts, because you named them; prefer passing the objects themselves.
    """
    trusted_objects = resolve_trusted(trusted)
    if isinstance(file, io.TextIOBase):
        raise TypeError("Open the file in binary mode ('rb' to load).")
    with safe_zip.open_archive(file, "This file") as archive:
        manifest = _read_manifest(archive)
        estimator_class = _resolve(
            manifest.get("estimator"), _allowed(ESTIMATOR, trusted_objects), "the estimator class"
        )
        # A user's trusted class may stand in any role: it must still be one of the estimators.
        estimators = tuple(builtin_allow_list()[ESTIMATOR].values())
        if not (inspect.isclass(estimator_class) and issubclass(estimator_class, estimators)):
            raise ValueError(
                f"{manifest['estimator']!r} is not a qnn_sklearn estimator class (nor a subclass "
                "of one)."
            )
        params = {
            name: _decode(
                value, f"parameter {name!r}", _allowed(PARAMETER_ROLES.get(name), trusted_objects)
            )
            for name, value in _object(manifest, "params").items()
        }
        if params.get("module", SparseQuantNeuralNetwork) is not SparseQuantNeuralNetwork:
            raise ValueError("parameter 'module': load rebuilds only SparseQuantNeuralNetwork.")
        n_networks = check_n_networks(params.get("n_networks", 1))
        saved = [
            _read_network(archive, spec, n_networks, trusted_objects)
            for spec in _network_specs(manifest, n_networks)
        ]
        if any(network.init_kwargs != saved[0].init_kwargs for network in saved):
            raise ValueError(f"{MANIFEST}: the averaged networks' init_kwargs differ.")
        compile_options = _saved_compile_options(manifest.get("compile_options"))
    estimator = estimator_class(**params)
    _restore_fitted(estimator, _object(manifest, "fitted"))
    if compile_options is not None:
        estimator.saved_compile_options_ = compile_options
    # skorch's initialize() builds networks from these before the saved ones replace them.
    network_widths(
        estimator.get_params_for("module"), "the module__ parameters and fitted sizes", n_networks
    )
    networks = [network.rebuilt() for network in saved]
    _install_network(
        estimator, networks[0] if n_networks == 1 else AveragedNetworks(networks).eval()
    )
    return estimator


def _network_specs(manifest: dict, n_networks: int) -> list[dict]:
    """The manifest's network entries: ``network``, or the list ``networks`` of averaged ones
    (as many as the ``n_networks`` parameter says)."""
    if n_networks == 1:
        return [_object(manifest, "network")]
    specs = manifest.get("networks")
    if not (isinstance(specs, list) and len(specs) == n_networks):
        raise ValueError(f"{MANIFEST}: 'networks' must be a list of n_networks={n_networks}.")
    if not all(isinstance(spec, dict) for spec in specs):
        raise ValueError(f"{MANIFEST}: each of 'networks' must be a JSON object.")
    return specs


class _SavedNetwork(NamedTuple):
    """One network's entry, checked, and its tensors, read."""

    init_kwargs: dict
    widths: list[int]
    plan: RoundingPlan | None
    has_plan: bool
    state: dict

    def rebuilt(self) -> SparseQuantNeuralNetwork:
        """The network, refused unless its tensors fit its arguments and its weights make the
        saved rounding plan."""
        try:
            network = rebuild_network(self.init_kwargs, self.widths[1:-1], self.state).eval()
        except RuntimeError as error:
            raise ValueError(
                f"{MANIFEST}: network.state does not fit network.init_kwargs: {error}"
            ) from None
        if self.has_plan:
            check_rounding_plan(self.plan, network)
        return network


def _read_network(archive, spec: dict, n_networks: int, trusted_objects) -> _SavedNetwork:
    """One network entry: its arguments decoded against the allow-list and bounded (with
    ``n_networks`` networks of them), its widths and plan checked, its tensors read."""
    init_kwargs = _decode(
        spec.get("init_kwargs"), "the network's init_kwargs", _allowed(ACTIVATION, trusted_objects)
    )
    if not isinstance(init_kwargs, dict):
        raise ValueError(f"{MANIFEST}: network.init_kwargs must be an object.")
    full_widths = network_widths(init_kwargs, "network.init_kwargs", n_networks)
    widths = checked_widths(spec.get("hidden_widths"), full_widths)
    # files written before the plan was saved have none to check
    has_plan = "rounding_plan" in spec
    plan = saved_rounding_plan(spec.get("rounding_plan"), widths)
    state = read_state(archive, spec.get("state"), widths)
    return _SavedNetwork(init_kwargs, widths, plan, has_plan, state)


def _install_network(
    estimator: Estimator, network: SparseQuantNeuralNetwork | AveragedNetworks
) -> None:
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


def _read_manifest(archive: zipfile.ZipFile) -> dict:
    safe_zip.require_members(archive, [MANIFEST], "This zip", "dump")
    manifest = safe_zip.read_json_member(archive, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{MANIFEST} does not describe a {FORMAT_NAME} file.")
    file_format.check_format_version(
        manifest.get("format_version"),
        FORMAT_VERSION,
        "This file",
        manifest.get("qnn_sklearn_version"),
    )
    return manifest


def _saved_compile_options(data) -> CompileOptions | None:
    """The error probabilities of the compile before ``dump``; None if it was not compiled
    (``null``) or the file predates them (no key)."""
    if data is None:
        return None
    return CompileOptions.from_json(data, f"{MANIFEST}: compile_options")


def _object(container: dict, key: str) -> dict:
    value = container.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{MANIFEST}: {key!r} must be a JSON object, got {type(value).__name__}.")
    return value


# -- parameters: JSON values and import paths -------------------------------------------------


def _decode(value, where: str, allowed: Mapping[str, object], depth: int = 0):
    """Inverse of :func:`_encode`; an import path must be a key of ``allowed``."""
    if depth > MAX_NESTING:
        raise ValueError(f"{where} nests lists and dicts more than {MAX_NESTING} deep.")
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise ValueError(f"{where}: a bare JSON list is not something dump writes.")
        return value
    kind, items = value.get("kind"), value.get("value")
    if kind in ("list", "tuple") and isinstance(items, list):
        decoded = [
            _decode(item, f"{where}[{index}]", allowed, depth + 1)
            for index, item in enumerate(items)
        ]
        return decoded if kind == "list" else tuple(decoded)
    if kind == "dict" and isinstance(items, dict):
        return {
            key: _decode(item, f"{where}[{key!r}]", allowed, depth + 1)
            for key, item in items.items()
        }
    if kind == "import":
        return _resolve(items, allowed, where)
    raise ValueError(f"{where} has an unknown kind {kind!r} in {MANIFEST}.")


def _allowed(role: str | None, trusted: Mapping[str, object]) -> dict[str, object]:
    """Import paths a parameter of that role may name: the role's built-in list, the user's."""
    return {**builtin_allow_list().get(role, {}), **trusted}


def _resolve(path, allowed: Mapping[str, object], where: str):
    """The allow-listed object at ``path``; nothing is imported."""
    if isinstance(path, str) and path in allowed:
        return allowed[path]
    raise ValueError(
        f"{where}: {path!r} is not on the allow-list of classes load may call there, so it "
        "was neither imported nor called. If you trust this file and the class, pass it: "
        "qnn_sklearn.load(file, trusted=[TheClass])."
    )


# -- fitted attributes -------------------------------------------------------------------------


def _restore_fitted(estimator, fitted: dict) -> None:
    for name in FITTED_INTEGERS:
        if name not in fitted and name != "target_ndim_":  # only regressors have that one
            raise ValueError(f"{MANIFEST}: fitted.{name} is missing.")
        if name in fitted:
            value = safe_zip.declared_int(
                fitted[name], f"{MANIFEST}: fitted.{name}", safe_zip.MAX_DECLARED_WIDTH
            )
            setattr(estimator, name, value)
    if "feature_names_in_" in fitted:
        names = fitted["feature_names_in_"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"{MANIFEST}: fitted.feature_names_in_ must be a list of strings.")
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
    if "classes" in fitted:
        estimator.label_encoder_ = LabelEncoder()
        estimator.label_encoder_.classes_ = file_format.labels_from_json(
            fitted["classes"], f"{MANIFEST}: fitted.classes"
        )
