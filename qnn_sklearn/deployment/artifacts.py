"""What ``client.zip`` and ``server.zip`` hold besides concrete-python's own files, as JSON.

``client.zip`` = concrete-python's ``client.specs.json`` + ``qnn_sklearn.json`` (input shape,
pre-processing, input quantizer, output stages, post-processing) + ``versions.json``.
``server.zip`` = concrete-python's ``Server.save`` archive + ``versions.json``.

Nothing here is pickled: every object is rebuilt from plain JSON by the functions below. The
archives may come from anyone: they are read through :mod:`qnn_sklearn.safe_zip` (bounded
members, bounded JSON, safe member names), and every size the JSON declares (input shape, bit
widths, label dtype) is bounded before anything is allocated from it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__ as QNN_SKLEARN_VERSION
from .. import file_format, safe_zip
from ..fhe_runtime import fhe
from ..quantization import QuantizationOptions, QuantizedModule, UniformQuantizer
from ..quantization.ops import _Reshape
from ..quantization.stages import Stage, stage_from_json
from .served_model import ServedModel

CLIENT_ZIP = "client.zip"
SERVER_ZIP = "server.zip"
VERSIONS_JSON = "versions.json"
MODEL_JSON = "qnn_sklearn.json"
FORMAT = 1

# Files of a Server.save(via_mlir=True) archive: loading one runs jsonpickle on
# configuration.json, which can build arbitrary objects. FHEModelServer refuses them.
_UNSAFE_SERVER_FILES = ("configuration.json", "circuit.mlir")
# Files concrete's Server.load reads after extracting the archive: checked before, so that a
# load that would fail does not leave an extraction directory behind.
CLIENT_SPECS_JSON = "client.specs.json"
_REQUIRED_SERVER_FILES = ("is_simulated", CLIENT_SPECS_JSON, "sharedlib.so")
MAX_INPUT_AXES = 8
"""Most axes of the input shape a ``client.zip`` may declare."""


class ArtifactError(ValueError):
    """A model directory or archive is missing, malformed or unsafe to load."""


class VersionMismatchError(RuntimeError):
    """Artifacts made with another qnn_sklearn or concrete-python version than the installed."""


def current_versions() -> dict:
    return {
        "format": FORMAT,
        "qnn_sklearn": QNN_SKLEARN_VERSION,
        "concrete-python": fhe.__version__,
    }


def check_versions(found, what: str) -> None:
    """Refuse another format version (:class:`ArtifactError`), then other runtime versions
    (:class:`VersionMismatchError`, naming both sides)."""
    if not isinstance(found, dict):
        raise ArtifactError(f"{what}: {VERSIONS_JSON} must be a JSON object.")
    try:
        file_format.check_format_version(
            found.get("format"), FORMAT, what, found.get("qnn_sklearn")
        )
    except file_format.FormatError as error:
        raise ArtifactError(str(error)) from None
    mine = current_versions()
    keys = ("qnn_sklearn", "concrete-python")
    if any(found.get(key) != mine[key] for key in keys):
        raise VersionMismatchError(
            f"{what} was made with qnn_sklearn {found.get('qnn_sklearn')} and concrete-python "
            f"{found.get('concrete-python')}, but this environment has qnn_sklearn "
            f"{mine['qnn_sklearn']} and concrete-python {mine['concrete-python']}. FHE "
            "artifacts only load under the versions that made them: save the model again with "
            "FHEModelDev here, or install the versions above."
        )


def open_archive(path: Path) -> zipfile.ZipFile:
    """``path`` opened through :mod:`qnn_sklearn.safe_zip`; :class:`ArtifactError` if unsafe."""
    try:
        return safe_zip.open_archive(path, str(path))
    except (safe_zip.UnsafeArchiveError, OSError) as error:
        raise ArtifactError(str(error)) from None


def read_zip_json(archive: zipfile.ZipFile, name: str, parse: bool = True):
    """One JSON member of an archive opened by :func:`open_archive`, bounded by
    ``safe_zip.MAX_JSON_BYTES``: parsed, or its bytes with ``parse=False`` (for concrete's
    own deserializers)."""
    _require_members(archive, [name])
    try:
        if parse:
            return safe_zip.read_json_member(archive, name)
        return safe_zip.read_member(archive, name, is_json=True)
    except safe_zip.UnsafeArchiveError as error:
        raise ArtifactError(f"{archive.filename}: {error}") from None


def _require_members(archive: zipfile.ZipFile, names) -> None:
    try:
        safe_zip.require_members(archive, names, archive.filename, "FHEModelDev")
    except safe_zip.UnsafeArchiveError as error:
        raise ArtifactError(str(error)) from None


def add_json_to_zip(path: Path, name: str, data: dict) -> None:
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, json.dumps(data, indent=1))


def check_server_zip_is_safe(archive: zipfile.ZipFile) -> None:
    """Refuse what concrete's ``Server.load`` must not see: a via-MLIR export (its loading runs
    jsonpickle), a missing file, a member that inflates past the limits or lies about its size.

    ``Server.load`` extracts every member without limits; after this check, each is known to
    inflate to what it declares, within ``safe_zip``'s limits, under a safe name.
    """
    unsafe = sorted(set(archive.namelist()).intersection(_UNSAFE_SERVER_FILES))
    if unsafe:
        raise ArtifactError(
            f"{archive.filename} holds {unsafe}: a via-MLIR export, whose loading unpickles "
            "(jsonpickle) its configuration. Save the model with FHEModelDev instead."
        )
    _require_members(archive, _REQUIRED_SERVER_FILES)
    try:
        safe_zip.verify_members(archive)
    except safe_zip.UnsafeArchiveError as error:
        raise ArtifactError(f"{archive.filename}: {error}") from None


# -- the clear ends of the model: pre-processing, quantizer, output stages, classes -------------


def preprocessing_to_json(functions) -> list[dict]:
    out = []
    for function in functions:
        if isinstance(function, _Reshape):
            out.append({"kind": "reshape", "feature_shape": list(function.feature_shape)})
        elif isinstance(function, Stage):
            out.append(function.to_json())
        else:
            raise ArtifactError(
                f"Cannot serialize the pre-processing step {function!r}: only stages and "
                "reshapes of the quantization package are supported."
            )
    return out


def preprocessing_from_json(items: list[dict]) -> tuple:
    return tuple(
        _Reshape(_declared_shape(item["feature_shape"], "preprocessing feature_shape"))
        if item["kind"] == "reshape"
        else stage_from_json(item)
        for item in items
    )


def quantizer_to_json(quantizer: UniformQuantizer) -> dict:
    options = quantizer.options
    return {
        "n_bits": int(options.n_bits),
        "is_signed": bool(options.is_signed),
        "is_symmetric": bool(options.is_symmetric),
        "is_narrow": bool(options.is_narrow),
        "scale": float(quantizer.scale),
        "zero_point": int(quantizer.zero_point),
    }


def quantizer_from_json(data: dict) -> UniformQuantizer:
    n_bits = safe_zip.declared_int(
        data["n_bits"], "input_quantizer.n_bits", safe_zip.MAX_DECLARED_BITS
    )
    options = QuantizationOptions(
        n_bits,
        bool(data["is_signed"]),
        bool(data["is_symmetric"]),
        bool(data["is_narrow"]),
    )
    return UniformQuantizer(options, float(data["scale"]), int(data["zero_point"]))


def classes_from_json(data) -> np.ndarray | None:
    """A classifier's labels (:func:`qnn_sklearn.file_format.labels_from_json`), or None."""
    if data is None:
        return None
    try:
        return file_format.labels_from_json(data, "classes")
    except (file_format.FormatError, safe_zip.UnsafeArchiveError) as error:
        raise ArtifactError(f"{MODEL_JSON}: {error}") from None


def model_to_json(served: ServedModel) -> dict:
    """The client's half of ``served``: the clear ends of its module, its task and labels."""
    module, classes = served.module, served.classes
    return {
        "task": served.task,
        "squeeze_output": served.squeeze_output,
        "input_shape": list(module.input_shape),
        "preprocessing": preprocessing_to_json(module.preprocessing),
        "input_quantizer": quantizer_to_json(module.input_quantizer),
        "output_stages": [stage.to_json() for stage in module.output_stages],
        "classes": None if classes is None else file_format.labels_to_json(classes),
    }


def client_module_from_json(data: dict) -> QuantizedModule:
    """A QuantizedModule with the clear ends only (no integer program): the client's half.

    :class:`ArtifactError` names what is malformed or declares more than the limits allow.
    """
    try:
        return QuantizedModule(
            _declared_shape(data["input_shape"], "input_shape"),
            preprocessing_from_json(data["preprocessing"]),
            quantizer_from_json(data["input_quantizer"]),
            [],
            tuple(stage_from_json(item) for item in data["output_stages"]),
            [],
        )
    except safe_zip.UnsafeArchiveError as error:
        raise ArtifactError(f"{MODEL_JSON}: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        kind = type(error).__name__
        raise ArtifactError(f"{MODEL_JSON} is malformed ({kind}: {error}).") from None
    except RecursionError:
        raise ArtifactError(f"{MODEL_JSON} nests its stages too deeply.") from None


def _declared_shape(shape, field: str) -> tuple[int, ...]:
    """A shape of one row, refused past ``safe_zip.MAX_DECLARED_WIDTH`` values in all."""
    if not isinstance(shape, list):
        raise safe_zip.UnsafeArchiveError(f"{field} must be a list, got {str(shape)[:100]}.")
    safe_zip.declared_int(len(shape), f"the number of axes of {field}", MAX_INPUT_AXES)
    for axis, dim in enumerate(shape):
        safe_zip.declared_int(dim, f"{field}[{axis}]", safe_zip.MAX_DECLARED_WIDTH)
    size = int(np.prod(shape, dtype=object))
    safe_zip.declared_int(size, f"the product of {field}", safe_zip.MAX_DECLARED_WIDTH)
    return tuple(shape)
