"""FHEModelDev / FHEModelClient / FHEModelServer: a compiled model split into client and server.

The developer saves ``client.zip`` and ``server.zip``; the client keeps the secret key, encrypts
and decrypts; the server only ever sees evaluation keys and ciphertexts::

    FHEModelDev("model_dir", model).save()                       # developer
    client = FHEModelClient("model_dir", key_dir="keys")          # client
    client.generate_private_and_evaluation_keys()
    evaluation_keys = client.get_serialized_evaluation_keys()
    encrypted = client.quantize_encrypt_serialize(X)
    result = FHEModelServer("model_dir").load().run(encrypted, evaluation_keys)   # server
    y = client.deserialize_decrypt_dequantize(result)   # = predict_proba / predict in the clear

Everything that crosses a boundary is JSON or concrete-python's own serialization; nothing is
pickled. Both archives are read through :mod:`qnn_sklearn.safe_zip` (bounded sizes, safe
member names) and the sizes they declare are bounded. ``server.zip`` does hold the compiled
circuit as a shared library, which the server loads and runs: only load model directories
from a developer you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from ..fhe_runtime import fhe
from ..postprocessing import softmax
from ..quantization import QuantizedModule
from . import framing
from .artifacts import (
    CLIENT_SPECS_JSON,
    CLIENT_ZIP,
    MODEL_JSON,
    SERVER_ZIP,
    VERSIONS_JSON,
    ArtifactError,
    add_json_to_zip,
    check_server_zip_is_safe,
    check_versions,
    classes_from_json,
    client_module_from_json,
    current_versions,
    model_to_json,
    open_archive,
    read_zip_json,
)
from .served_model import TASK_CLASSIFIER, TASK_REGRESSOR, TASKS, ServedModel

COMPRESSION = {"compress_evaluation_keys": True, "compress_input_ciphertexts": True}
"""The concrete-python options that shrink evaluation keys and input ciphertexts (seeded)."""


def _is_compressed(configuration: fhe.Configuration) -> bool:
    return all(getattr(configuration, name) for name in COMPRESSION)


class FHEModelDev:
    """Save a compiled model as ``client.zip`` and ``server.zip`` in ``path_dir``.

    Parameters
    ----------
    path_dir : str or Path
        Directory to write to (created if missing).
    model : QuantizedModule, DeployableEstimator or ServedModel
        A compiled ``QuantizedModule`` (its raw dequantized output is served), a fitted,
        compiled estimator (a classifier serves ``predict_proba``, a regressor ``predict``),
        or a :class:`~.served_model.ServedModel` that states the task explicitly.
    compress : bool, default True
        Evaluation-key and input-ciphertext compression are compilation options of
        concrete-python. When the circuit was compiled without them, ``save`` recompiles its
        MLIR with them (the same program, in a fraction of a second). Compile with
        ``configuration=fhe.Configuration(**COMPRESSION)`` to skip that step.
    """

    def __init__(self, path_dir, model, compress: bool = True):
        self.path_dir = Path(path_dir)
        self.model = model
        self.compress = compress

    def _server(self, module: QuantizedModule) -> fhe.Server:
        """The circuit's server; with ``compress``, recompiled from its MLIR with compression.

        The configuration is the one ``compile`` used (``module.compile_options``), so the
        recompiled circuit has the same ``p_error`` / ``global_p_error`` and so the same crypto
        parameters; only the compression options are added.
        """
        circuit = module.fhe_circuit
        configuration = module.compile_options.circuit_configuration()
        if not self.compress or _is_compressed(configuration):
            return circuit.server
        configuration = configuration.fork(fhe_simulation=False, fhe_execution=False, **COMPRESSION)
        return fhe.Server.create(circuit.mlir, configuration)

    def save(self, mode: str = "error") -> Path:
        """Write the two archives; ``mode="overwrite"`` replaces existing ones.

        Returns the directory.
        """
        if mode not in ("error", "overwrite"):
            raise ValueError(f"mode must be 'error' or 'overwrite', got {mode!r}.")
        served = ServedModel.of(self.model)
        targets = [self.path_dir / CLIENT_ZIP, self.path_dir / SERVER_ZIP]
        existing = [str(path) for path in targets if path.exists()]
        if existing and mode == "error":
            raise FileExistsError(f"{existing} already exist; pass mode='overwrite' to replace.")
        server = self._server(served.module)
        model_json = model_to_json(served)
        self.path_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.path_dir) as tmp:
            tmp = Path(tmp)
            server.save(tmp / SERVER_ZIP)
            add_json_to_zip(tmp / SERVER_ZIP, VERSIONS_JSON, current_versions())
            fhe.Client(server.client_specs, is_simulated=True).save(tmp / CLIENT_ZIP)
            add_json_to_zip(tmp / CLIENT_ZIP, MODEL_JSON, model_json)
            add_json_to_zip(tmp / CLIENT_ZIP, VERSIONS_JSON, current_versions())
            for target in targets:
                os.replace(tmp / target.name, target)
        return self.path_dir


def _zip_path(path, name: str) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: save the model with FHEModelDev first.")
    return path


def _client_specs(serialized: bytes, zip_path: Path) -> fhe.ClientSpecs:
    try:
        return fhe.ClientSpecs.deserialize(serialized)
    except RuntimeError as error:
        raise ArtifactError(f"{zip_path}: {CLIENT_SPECS_JSON} is malformed ({error}).") from None


class FHEModelClient:
    """The client's half: quantize, encrypt, decrypt, dequantize, post-process.

    Parameters
    ----------
    path_dir : str or Path
        Directory holding ``client.zip`` (or the zip itself).
    key_dir : str or Path, optional
        Where the private keys live between sessions (reused unless ``force``); keep it
        private and outside the model directory. ``None`` keeps them in memory only.
    """

    def __init__(self, path_dir, key_dir=None):
        zip_path = _zip_path(path_dir, CLIENT_ZIP)
        with open_archive(zip_path) as archive:
            check_versions(read_zip_json(archive, VERSIONS_JSON), str(zip_path))
            description = read_zip_json(archive, MODEL_JSON)
            specs = read_zip_json(archive, CLIENT_SPECS_JSON, parse=False)
        if not isinstance(description, dict) or description.get("task") not in TASKS:
            raise ArtifactError(f"{zip_path}: {MODEL_JSON} names no known task ({TASKS}).")
        self.path_dir = zip_path.parent
        self.task = description["task"]
        self.squeeze_output = description.get("squeeze_output")
        self.module = client_module_from_json(description)
        self.classes_ = classes_from_json(description.get("classes"))
        # Built from the bounded bytes above, not with fhe.Client.load, which would extract
        # the whole archive to a temporary directory without limits.
        self.client = fhe.Client(_client_specs(specs, zip_path))
        self.key_dir = None if key_dir is None else Path(key_dir)
        shipped = (self.path_dir / SERVER_ZIP).exists()
        if (
            shipped
            and self.key_dir is not None
            and self.key_dir.resolve().is_relative_to(self.path_dir.resolve())
        ):
            raise ValueError(
                f"key_dir {self.key_dir} lies inside the model directory {self.path_dir}, which "
                "holds server.zip and goes to servers: keep the private keys elsewhere."
            )
        digest = hashlib.sha256(self.client.specs.serialize()).hexdigest()[:16]
        self._key_file = f"qnn_sklearn_keys_{digest}.bin"

    def compression(self) -> dict:
        """Whether the circuit's evaluation keys and input ciphertexts are compressed."""
        specs = json.loads(self.client.specs.serialize())
        keyset = specs["keyset"]
        keys = keyset["lweBootstrapKeys"] + keyset["lweKeyswitchKeys"]
        inputs = [
            item["typeInfo"].get("lweCiphertext", {})
            for circuit in specs["circuits"]
            for item in circuit["inputs"]
        ]
        return {
            "evaluation_keys": all(key.get("compression") == "seed" for key in keys),
            "input_ciphertexts": all(item.get("compression") == "seed" for item in inputs),
        }

    @property
    def key_path(self) -> Path | None:
        """File of the private keys in ``key_dir`` (named after the circuit's specs)."""
        return None if self.key_dir is None else self.key_dir / self._key_file

    def generate_private_and_evaluation_keys(self, force: bool = False) -> None:
        """Load the keys from ``key_dir`` if there, else generate (and store) them."""
        keys = self.client.keys
        if keys.are_generated and not force:
            return
        path = self.key_path
        if path is not None and path.exists() and not force:
            try:
                keys.load(path)
            except RuntimeError as error:
                raise ValueError(
                    f"{path} is not a key file of this model ({error}); delete it or pass "
                    "force=True to make new keys."
                ) from None
            return
        keys.generate(force=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
            try:
                with os.fdopen(fd, "wb") as file:  # mkstemp creates it readable by us only
                    file.write(keys.serialize())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def get_serialized_evaluation_keys(self) -> bytes:
        """The public evaluation keys the server needs (no secret key)."""
        self.generate_private_and_evaluation_keys()
        return self.client.evaluation_keys.serialize()

    def quantize_encrypt_serialize(self, X) -> bytes:
        """Rows of ``X`` (floats) to one blob of framed ciphertexts, one per row."""
        self.generate_private_and_evaluation_keys()
        q_x = self.module.quantize_input(X)
        return framing.pack([self.client.encrypt(row[None]).serialize() for row in q_x])

    def deserialize_decrypt(self, serialized_result: bytes) -> np.ndarray:
        """The circuit's output integers, shape (n_rows, n_outputs)."""
        if not self.client.keys.are_generated:
            if self.key_path is None or not self.key_path.exists():
                raise RuntimeError(
                    "This client has no private keys: results decrypt only with the keys that "
                    "encrypted the inputs (keep them in key_dir between sessions)."
                )
            self.generate_private_and_evaluation_keys()
        rows = []
        for index, payload in enumerate(framing.unpack(serialized_result)):
            try:
                value = self.client.decrypt(fhe.Value.deserialize(payload))
            except RuntimeError as error:
                raise ValueError(f"Result {index} is not a result of this model: {error}") from None
            rows.append(np.asarray(value, dtype=np.int64).reshape(1, -1))
        return np.concatenate(rows)

    def deserialize_decrypt_dequantize(self, serialized_result: bytes) -> np.ndarray:
        """What ``predict_proba`` (classifier) / ``predict`` (regressor) gives in the clear."""
        output = self.module.dequantize_output(self.deserialize_decrypt(serialized_result))
        if self.task == TASK_CLASSIFIER:
            return softmax(output)
        if self.task == TASK_REGRESSOR:
            squeeze = output.shape[1] == 1 if self.squeeze_output is None else self.squeeze_output
            return output[:, 0] if squeeze else output
        return output


class FHEModelServer:
    """The server's half: run the compiled circuit on ciphertexts with the client's keys.

    ``load`` extracts ``server.zip`` into a temporary directory, from which the circuit's
    shared library runs. ``close`` removes it; so does leaving a ``with`` block, and so does
    garbage collection of the loaded circuit (or the interpreter's normal exit). A process
    that keeps a server for its lifetime and is then killed cannot clean up: call ``close``
    before replacing a server or stopping a worker.

    Parameters
    ----------
    path_dir : str or Path
        Directory holding ``server.zip`` (or the zip itself).
    """

    def __init__(self, path_dir):
        self.path_dir = Path(path_dir)
        self.server: fhe.Server | None = None
        self.extraction_dir: Path | None = None
        """Where the loaded circuit was extracted; None when nothing is loaded."""
        self._remove_extraction = None

    def load(self) -> FHEModelServer:
        """Check the archive and the versions, then load the circuit; returns ``self``.

        A server loaded before is closed first. ``ArtifactError`` for an archive that is
        unsafe (see :func:`~qnn_sklearn.deployment.artifacts.check_server_zip_is_safe`);
        nothing is extracted then.
        """
        self.close()
        zip_path = _zip_path(self.path_dir, SERVER_ZIP)
        with open_archive(zip_path) as archive:
            check_versions(read_zip_json(archive, VERSIONS_JSON), str(zip_path))
            check_server_zip_is_safe(archive)
        server = fhe.Server.load(zip_path)
        # Server.load's extraction directory (a concrete internal; the versions are pinned).
        self.extraction_dir = Path(server._library.get_output_dir_path())
        self._remove_extraction = weakref.finalize(
            server, shutil.rmtree, self.extraction_dir, ignore_errors=True
        )
        self.server = server
        return self

    def close(self) -> None:
        """Drop the circuit and remove its extraction directory; a later ``run`` loads again.

        Call it when no ``run`` is in progress on another thread: the running circuit's shared
        library lives in that directory.
        """
        self.server = self.extraction_dir = None
        if self._remove_extraction is not None:
            self._remove_extraction()
            self._remove_extraction = None

    def __enter__(self) -> FHEModelServer:
        return self if self.server is not None else self.load()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @staticmethod
    def load_evaluation_keys(serialized_evaluation_keys: bytes) -> fhe.EvaluationKeys:
        """Deserialize evaluation keys; ``ValueError`` when they are not such keys."""
        if not isinstance(serialized_evaluation_keys, (bytes, bytearray)):
            raise ValueError("Evaluation keys must be bytes.")
        try:
            return fhe.EvaluationKeys.deserialize(bytes(serialized_evaluation_keys))
        except RuntimeError as error:
            raise ValueError(f"These bytes are not evaluation keys: {error}") from error

    def run(
        self,
        serialized_encrypted_input: bytes,
        serialized_evaluation_keys: bytes | fhe.EvaluationKeys,
    ) -> bytes:
        """Framed ciphertexts in, framed encrypted results out (one per row).

        ``serialized_evaluation_keys`` may also be keys already deserialized with
        :meth:`load_evaluation_keys`, to pay their deserialization once.
        ``ValueError`` for malformed input.
        """
        if self.server is None:
            self.load()
        keys = serialized_evaluation_keys
        if not isinstance(keys, fhe.EvaluationKeys):
            keys = self.load_evaluation_keys(keys)
        values = []
        for index, payload in enumerate(framing.unpack(serialized_encrypted_input)):
            try:
                values.append(fhe.Value.deserialize(payload))
            except RuntimeError as error:
                raise ValueError(f"Input {index} is not a serialized ciphertext: {error}") from None
        results = []
        for index, value in enumerate(values):
            try:
                results.append(self.server.run(value, evaluation_keys=keys).serialize())
            except RuntimeError as error:
                raise ValueError(
                    f"Input {index} does not fit this model's circuit: {error}"
                ) from None
        return framing.pack(results)
