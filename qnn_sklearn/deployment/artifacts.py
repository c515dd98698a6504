"""What ``client.zip`` and ``server.zip`` hold besides concrete-python's own files, as JSON.

``client.zip`` = concrete-python's ``client.specs.json`` + ``qnn_sklearn.json`` (input shape,
pre-processing, input quantizer, output stages, post-processing) + ``versions.json``.
``server.zip`` = concrete-python's ``Server.save`` archive + ``versions.json``.

Nothing here is pickled: every object is rebuilt from plain JSON by the functions below.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__ as QNN_SKLEARN_VERSION
from ..fhe_runtime import fhe
from ..quantization import QuantizationOptions, QuantizedModule, UniformQuantizer
from ..quantization.ops import _Reshape
from ..quantization.stages import Stage, stage_from_json

CLIENT_ZIP = "client.zip"
SERVER_ZIP = "server.zip"
VERSIONS_JSON = "versions.json"
MODEL_JSON = "qnn_sklearn.json"
FORMAT = 1

TASK_MODULE = "module"
TASK_CLASSIFIER = "classifier"
TASK_REGRESSOR = "regressor"
TASKS = (TASK_MODULE, TASK_CLASSIFIER, TASK_REGRESSOR)

# Files of a Server.save(via_mlir=True) archive: loading one runs jsonpickle on
# configuration.json, which can build arbitrary objects. FHEModelServer refuses them.
_UNSAFE_SERVER_FILES = ("configuration.json", "circuit.mlir")


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


def check_versions(found: dict, what: str) -> None:
    """Raise :class:`VersionMismatchError` naming both sides when ``found`` differs."""
    mine = current_versions()
    if found.get("format") != FORMAT:
        raise ArtifactError(
            f"{what} has format {found.get('format')!r}; this qnn_sklearn reads format {FORMAT}."
        )
    keys = ("qnn_sklearn", "concrete-python")
    if any(found.get(key) != mine[key] for key in keys):
        raise VersionMismatchError(
            f"{what} was made with qnn_sklearn {found.get('qnn_sklearn')} and concrete-python "
            f"{found.get('concrete-python')}, but this environment has qnn_sklearn "
            f"{mine['qnn_sklearn']} and concrete-python {mine['concrete-python']}. FHE "
            "artifacts only load under the versions that made them: save the model again with "
            "FHEModelDev here, or install the versions above."
        )


def read_zip_json(path: Path, name: str) -> dict:
    """One JSON member of a zip archive, with :class:`ArtifactError` for what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            if name not in archive.namelist():
                raise ArtifactError(f"{path} has no {name}: it was not saved by FHEModelDev.")
            return json.loads(archive.read(name).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"Cannot read {name} from {path}: {error}") from error


def add_json_to_zip(path: Path, name: str, data: dict) -> None:
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, json.dumps(data, indent=1))


def check_server_zip_is_safe(path: Path) -> None:
    """Refuse archives whose loading would run jsonpickle (``Server.save(via_mlir=True)``)."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    unsafe = sorted(names.intersection(_UNSAFE_SERVER_FILES))
    if unsafe:
        raise ArtifactError(
            f"{path} holds {unsafe}: a via-MLIR export, whose loading unpickles (jsonpickle) "
            "its configuration. Save the model with FHEModelDev instead."
        )


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
        _Reshape(item["feature_shape"]) if item["kind"] == "reshape" else stage_from_json(item)
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
    options = QuantizationOptions(
        int(data["n_bits"]),
        bool(data["is_signed"]),
        bool(data["is_symmetric"]),
        bool(data["is_narrow"]),
    )
    return UniformQuantizer(options, float(data["scale"]), int(data["zero_point"]))


def classes_to_json(classes) -> dict:
    """Labels of any numpy dtype that JSON can carry (numbers, booleans, strings)."""
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ArtifactError(f"classes_ must be 1-D, got shape {classes.shape}.")
    if classes.dtype.kind in "biufUS":
        values = classes.astype(str).tolist() if classes.dtype.kind == "S" else classes.tolist()
        return {"dtype": classes.dtype.str, "values": values}
    values = classes.tolist()
    if not all(isinstance(value, (str, int, float, bool)) for value in values):
        raise ArtifactError(
            "classes_ holds labels that JSON cannot carry (only numbers, booleans and strings)."
        )
    return {"dtype": "object", "values": values}


def classes_from_json(data: dict) -> np.ndarray:
    if data["dtype"] == "object":
        out = np.empty(len(data["values"]), dtype=object)
        out[:] = data["values"]
        return out
    dtype = np.dtype(data["dtype"])
    if dtype.kind == "S":
        return np.array([value.encode() for value in data["values"]], dtype=dtype)
    return np.array(data["values"], dtype=dtype)


def model_to_json(
    module: QuantizedModule, task: str, classes=None, squeeze_output: bool | None = None
) -> dict:
    return {
        "task": task,
        "squeeze_output": squeeze_output,
        "input_shape": list(module.input_shape),
        "preprocessing": preprocessing_to_json(module.preprocessing),
        "input_quantizer": quantizer_to_json(module.input_quantizer),
        "output_stages": [stage.to_json() for stage in module.output_stages],
        "classes": None if classes is None else classes_to_json(classes),
    }


def client_module_from_json(data: dict) -> QuantizedModule:
    """A QuantizedModule with the clear ends only (no integer program): the client's half."""
    return QuantizedModule(
        tuple(data["input_shape"]),
        preprocessing_from_json(data["preprocessing"]),
        quantizer_from_json(data["input_quantizer"]),
        [],
        tuple(stage_from_json(item) for item in data["output_stages"]),
        [],
    )
