"""FHEModelDev / FHEModelClient / FHEModelServer with real concrete-python encryption."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from concrete import fhe

from qnn_sklearn.deployment import (
    ArtifactError,
    DeployableEstimator,
    FHEModelClient,
    FHEModelDev,
    FHEModelServer,
    ServedModel,
    VersionMismatchError,
    framing,
)
from qnn_sklearn.postprocessing import softmax

SERVER_SCRIPT = """
import sys
from pathlib import Path
from qnn_sklearn.deployment import FHEModelServer

model_dir, encrypted, keys, out = sys.argv[1:]
server = FHEModelServer(model_dir).load()
Path(out).write_bytes(server.run(Path(encrypted).read_bytes(), Path(keys).read_bytes()))
"""


def _rewrite_member(zip_path: Path, name: str, data: bytes) -> None:
    """Replace (or add) one member of a zip archive."""
    with zipfile.ZipFile(zip_path) as archive:
        members = {item: archive.read(item) for item in archive.namelist() if item != name}
    with zipfile.ZipFile(zip_path, "w") as archive:
        for item, content in members.items():
            archive.writestr(item, content)
        archive.writestr(name, data)


def test_save_writes_json_and_concrete_artifacts_only(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == ["client.zip", "server.zip"]
    with zipfile.ZipFile(model_dir / "client.zip") as archive:
        names = set(archive.namelist())
        assert names == {"client.specs.json", "qnn_sklearn.json", "versions.json"}
        for name in names:
            json.loads(archive.read(name))  # all JSON, nothing pickled
        description = json.loads(archive.read("qnn_sklearn.json"))
    assert description["task"] == "module"
    assert description["input_shape"] == [3]
    with zipfile.ZipFile(model_dir / "server.zip") as archive:
        names = set(archive.namelist())
    assert "versions.json" in names and "sharedlib.so" in names
    assert not names & {"configuration.json", "circuit.mlir"}  # no jsonpickle on load
    assert not any(name.endswith((".pkl", ".pickle")) for name in names)


def test_save_refuses_to_overwrite_unless_asked(tiny, model_dir, tmp_path):
    with pytest.raises(FileExistsError, match="overwrite"):
        FHEModelDev(model_dir, tiny[0]).save()
    target = tmp_path / "copy"
    shutil.copytree(model_dir, target)
    FHEModelDev(target, tiny[0]).save(mode="overwrite")
    assert FHEModelClient(target).compression() == {
        "evaluation_keys": True,
        "input_ciphertexts": True,
    }


def test_dev_rejects_uncompiled_and_unfitted_models(tiny, tmp_path):
    from qnn_sklearn import NeuralNetRegressor

    module = tiny[0]
    uncompiled = module.with_program("auto")
    with pytest.raises(RuntimeError, match="compile"):
        FHEModelDev(tmp_path / "a", uncompiled).save()
    with pytest.raises(ValueError, match="fit"):
        FHEModelDev(tmp_path / "b", NeuralNetRegressor()).save()
    with pytest.raises(TypeError, match="QuantizedModule"):
        FHEModelDev(tmp_path / "c", object()).save()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "task, classes, match",
    [("classifier", None, "classes"), ("module", ["a", "b"], "classes"), ("ranker", None, "task")],
)
def test_served_model_states_a_consistent_task(tiny, task, classes, match):
    with pytest.raises(ValueError, match=match):
        ServedModel(tiny[0], task, classes)


def test_client_and_server_in_separate_processes(
    tiny,
    model_dir,
    fhe_client,
    evaluation_keys,
    key_dir,
    X_test,
    tmp_path,
    python,
    subprocess_env,
):
    module = tiny[0]
    encrypted = fhe_client.quantize_encrypt_serialize(X_test)
    assert framing.count(encrypted) == len(X_test)
    (tmp_path / "in.bin").write_bytes(encrypted)
    (tmp_path / "keys.bin").write_bytes(evaluation_keys)
    subprocess.run(
        [
            python,
            "-c",
            SERVER_SCRIPT,
            str(model_dir),
            str(tmp_path / "in.bin"),
            str(tmp_path / "keys.bin"),
            str(tmp_path / "out.bin"),
        ],
        env=subprocess_env,
        check=True,
        timeout=300,
    )
    result = (tmp_path / "out.bin").read_bytes()
    q_expected = module.quantized_forward(module.quantize_input(X_test))
    np.testing.assert_array_equal(fhe_client.deserialize_decrypt(result), q_expected)
    np.testing.assert_allclose(
        fhe_client.deserialize_decrypt_dequantize(result), module.forward(X_test), rtol=0, atol=0
    )
    # The secret key lives in key_dir only: nothing of it in the model directory.
    key_files = list(key_dir.iterdir())
    assert [p.name for p in key_files] == [fhe_client.key_path.name]
    secret = key_files[0].read_bytes()
    model_bytes = b"".join(p.read_bytes() for p in model_dir.rglob("*") if p.is_file())
    for start in range(len(secret) // 4, len(secret), len(secret) // 4):
        assert secret[start : start + 64] not in model_bytes
    assert not any("key" in p.name for p in model_dir.rglob("*"))


def test_classifier_gives_predict_proba_with_string_classes(
    classifier, classifier_dir, key_dir, X_test
):
    client = FHEModelClient(classifier_dir, key_dir=key_dir)  # reuses the session's keys
    client.generate_private_and_evaluation_keys()
    assert client.task == "classifier"
    assert client.classes_.tolist() == ["cat", "dog"] and client.classes_.dtype.kind == "U"
    server = FHEModelServer(classifier_dir).load()
    result = server.run(
        client.quantize_encrypt_serialize(X_test), client.get_serialized_evaluation_keys()
    )
    proba = client.deserialize_decrypt_dequantize(result)
    np.testing.assert_array_equal(proba, softmax(classifier.module.forward(X_test)))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    labels = client.classes_[proba.argmax(axis=1)]
    assert set(labels) <= {"cat", "dog"}


@pytest.mark.parametrize("squeeze_output", [None, True])
def test_regressor_gives_predict(tiny, squeeze_output, key_dir, evaluation_keys, X_test, tmp_path):
    """Two outputs: 2-D unless the regressor was fitted on a 1-D target (then column 0)."""
    module = tiny[0]
    FHEModelDev(tmp_path / "model", ServedModel(module, "regressor", None, squeeze_output)).save()
    client = FHEModelClient(tmp_path / "model", key_dir=key_dir)
    assert client.task == "regressor"
    result = FHEModelServer(tmp_path / "model").run(
        client.quantize_encrypt_serialize(X_test), evaluation_keys
    )
    expected = module.forward(X_test)
    np.testing.assert_array_equal(
        client.deserialize_decrypt_dequantize(result),
        expected[:, 0] if squeeze_output else expected,
    )


def test_keys_are_reused_from_key_dir_unless_forced(model_dir, key_dir, fhe_client, tmp_path):
    again = FHEModelClient(model_dir, key_dir=key_dir)
    again.generate_private_and_evaluation_keys()
    encrypted = fhe_client.quantize_encrypt_serialize(np.zeros((1, 3)))
    result = FHEModelServer(model_dir).run(encrypted, fhe_client.get_serialized_evaluation_keys())
    np.testing.assert_array_equal(
        again.deserialize_decrypt(result), fhe_client.deserialize_decrypt(result)
    )
    fresh_dir = tmp_path / "keys"
    fresh = FHEModelClient(model_dir, key_dir=fresh_dir)
    fresh.generate_private_and_evaluation_keys()
    first = fresh.key_path.read_bytes()
    fresh.generate_private_and_evaluation_keys(force=True)
    assert fresh.key_path.read_bytes() != first
    assert fresh.key_path.stat().st_mode & 0o077 == 0  # private to its owner


def test_key_dir_inside_model_dir_is_refused(model_dir):
    with pytest.raises(ValueError, match="inside the model directory"):
        FHEModelClient(model_dir, key_dir=model_dir / "keys")


@pytest.mark.parametrize("archive", ["client.zip", "server.zip"])
@pytest.mark.parametrize(
    "versions",
    [
        {"qnn_sklearn": "0.0.1", "concrete-python": fhe.__version__},
        {"qnn_sklearn": "0.1.0", "concrete-python": "2.0.0"},
    ],
)
def test_other_versions_fail_naming_both(model_dir, tmp_path, archive, versions):
    import qnn_sklearn

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    versions = {"format": 1, **versions}
    _rewrite_member(copy / archive, "versions.json", json.dumps(versions).encode())
    load = FHEModelClient if archive == "client.zip" else lambda d: FHEModelServer(d).load()
    with pytest.raises(VersionMismatchError) as error:
        load(copy)
    message = str(error.value)
    for version in (
        versions["qnn_sklearn"],
        versions["concrete-python"],
        qnn_sklearn.__version__,
        fhe.__version__,
    ):
        assert version in message


def test_server_refuses_a_via_mlir_archive(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    _rewrite_member(copy / "server.zip", "configuration.json", b"{}")
    with pytest.raises(ArtifactError, match="jsonpickle"):
        FHEModelServer(copy).load()


def test_missing_artifacts_are_reported(tmp_path):
    with pytest.raises(ArtifactError, match="FHEModelDev"):
        FHEModelClient(tmp_path)
    with pytest.raises(ArtifactError, match="FHEModelDev"):
        FHEModelServer(tmp_path).load()


def test_malformed_inputs_raise_value_errors(model_dir, fhe_client, evaluation_keys):
    server = FHEModelServer(model_dir).load()
    encrypted = fhe_client.quantize_encrypt_serialize(np.zeros((2, 3)))
    with pytest.raises(framing.FramingError, match="[Tt]runcated"):
        server.run(encrypted[:-10], evaluation_keys)
    with pytest.raises(framing.FramingError, match="marker"):
        server.run(b"garbage" * 10, evaluation_keys)
    with pytest.raises(ValueError, match="not a serialized ciphertext"):
        server.run(framing.pack([b"\0" * 64]), evaluation_keys)
    with pytest.raises(ValueError, match="not evaluation keys"):
        server.run(encrypted, evaluation_keys[: len(evaluation_keys) // 2])
    with pytest.raises(ValueError, match="not a result"):
        fhe_client.deserialize_decrypt(framing.pack([b"\0" * 64]))
    with pytest.raises(ValueError, match="features"):
        fhe_client.quantize_encrypt_serialize(np.zeros((1, 4)))


def test_a_ciphertext_of_another_model_is_rejected(model_dir, evaluation_keys, other_model):
    _, other_client, _ = other_model
    foreign = other_client.quantize_encrypt_serialize(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="does not fit this model"):
        FHEModelServer(model_dir).run(foreign, evaluation_keys)


def test_framing_round_trip_and_limits():
    payloads = [b"a", b"", b"xyz" * 100]
    blob = framing.pack(payloads)
    assert framing.unpack(blob) == payloads
    with pytest.raises(framing.FramingError, match="unexpected bytes"):
        framing.unpack(blob + b"!")
    with pytest.raises(framing.FramingError, match="limit"):
        framing.unpack(blob, max_items=2)
    with pytest.raises(framing.FramingError):
        framing.pack([])


def test_compression_shrinks_keys_and_ciphertexts(tiny, model_dir, evaluation_keys, tmp_path):
    FHEModelDev(tmp_path / "plain", tiny[0], compress=False).save()
    plain = FHEModelClient(tmp_path / "plain")
    compressed = FHEModelClient(model_dir)
    assert plain.compression() == {"evaluation_keys": False, "input_ciphertexts": False}
    assert compressed.compression() == {"evaluation_keys": True, "input_ciphertexts": True}
    plain.generate_private_and_evaluation_keys()
    plain_keys = plain.get_serialized_evaluation_keys()
    x = np.zeros((1, 3))
    plain_ct = framing.unpack(plain.quantize_encrypt_serialize(x))[0]
    compressed_ct = framing.unpack(compressed.quantize_encrypt_serialize(x))[0]
    assert len(evaluation_keys) < len(plain_keys)
    assert len(compressed_ct) < len(plain_ct)
    # The uncompressed artifacts still work end to end.
    result = FHEModelServer(tmp_path / "plain").run(plain.quantize_encrypt_serialize(x), plain_keys)
    np.testing.assert_array_equal(plain.deserialize_decrypt_dequantize(result), tiny[0].forward(x))


def _keyset(specs: fhe.ClientSpecs) -> dict:
    """The crypto parameters of a circuit's keys, whether or not they are compressed."""
    keyset = json.loads(specs.serialize())["keyset"]
    for key in keyset["lweBootstrapKeys"] + keyset["lweKeyswitchKeys"]:
        key.pop("compression", None)
    return keyset


def test_the_saved_circuit_keeps_the_compiled_error_probability(tiny, model_dir, tmp_path):
    """FHEModelDev recompiles with compression from the module's compile_options: the
    p_error given to compile still picks the crypto parameters."""
    module = tiny[0].with_program("auto")
    module.compile(tiny[1], p_error=2**-3)
    FHEModelDev(tmp_path / "model", module).save()
    saved = _keyset(FHEModelClient(tmp_path / "model").client.specs)
    assert saved == _keyset(module.fhe_circuit.client.specs)
    assert saved != _keyset(FHEModelClient(model_dir).client.specs)  # default p_error


def test_decrypting_without_the_keys_is_refused(model_dir, fhe_client, tmp_path):
    result = FHEModelServer(model_dir).run(
        fhe_client.quantize_encrypt_serialize(np.zeros((1, 3))),
        fhe_client.get_serialized_evaluation_keys(),
    )
    with pytest.raises(RuntimeError, match="no private keys"):
        FHEModelClient(model_dir, key_dir=tmp_path / "empty").deserialize_decrypt(result)
    (tmp_path / "bad").mkdir()
    bad = FHEModelClient(model_dir, key_dir=tmp_path / "bad")
    bad.key_path.write_bytes(b"not keys")
    with pytest.raises(ValueError, match="not a key file"):
        bad.generate_private_and_evaluation_keys()


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_the_package_estimators_round_trip(kind, tmp_path):
    """NeuralNetClassifier (string labels) and NeuralNetRegressor (1-D target), small enough
    for cheap keys: the decrypted answer is predict_proba / predict."""
    import warnings

    from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor

    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    estimator, y = (
        (NeuralNetClassifier, np.where(X[:, 0] + X[:, 1] > 0, "yes", "no"))
        if kind == "classifier"
        else (NeuralNetRegressor, X[:, 0] - X[:, 2])
    )
    settings = dict(module__n_w_bits=2, module__n_a_bits=2, module__n_accum_bits=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = estimator(
            module__n_layers=2,
            module__n_hidden_neurons_multiplier=2,
            max_epochs=3,
            lr=1e-2,
            random_state=0,
            **settings,
        ).fit(X, y)
        model.compile(X)
    assert isinstance(model, DeployableEstimator)  # the protocol FHEModelDev relies on
    FHEModelDev(tmp_path / "model", model).save()
    client = FHEModelClient(tmp_path / "model")
    result = FHEModelServer(tmp_path / "model").run(
        client.quantize_encrypt_serialize(X[:4]), client.get_serialized_evaluation_keys()
    )
    answer = client.deserialize_decrypt_dequantize(result)
    if kind == "classifier":
        np.testing.assert_array_equal(answer, model.predict_proba(X[:4]))
        np.testing.assert_array_equal(client.classes_[answer.argmax(axis=1)], model.predict(X[:4]))
    else:
        assert answer.shape == (4,)
        np.testing.assert_array_equal(answer, model.predict(X[:4]))
