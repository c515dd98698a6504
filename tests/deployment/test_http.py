"""The HTTP service started for real (``python -m qnn_sklearn.deployment.cli serve``)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from qnn_sklearn.deployment import FHEModelClient, framing
from qnn_sklearn.deployment.cli import main
from qnn_sklearn.deployment.http_client import FHEHTTPClient, HTTPServiceError

MAX_INPUT_MB = 0.25


@pytest.fixture(scope="module")
def service(model_dir, python, subprocess_env, tmp_path_factory):
    """Base URL of a running service for ``model_dir``; stopped after the module."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("service") / "log.txt"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                python,
                "-m",
                "qnn_sklearn.deployment.cli",
                "serve",
                str(model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--max-input-mb",
                str(MAX_INPUT_MB),
                "--max-key-mb",
                "256",
                "--log-level",
                "warning",
            ],
            env=subprocess_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                assert json.loads(response.read())["status"] == "ok"
            break
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"The service did not start:\n{log.read_text()}")
            time.sleep(0.5)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def http_client(service, key_dir, tmp_path_factory) -> FHEHTTPClient:
    """A client whose client.zip came from the service itself."""
    client_dir = FHEHTTPClient.download_client(service, tmp_path_factory.mktemp("client"))
    return FHEHTTPClient(service, FHEModelClient(client_dir, key_dir=key_dir))


def _post(url, body: bytes, content_type="application/octet-stream"):
    request = urllib.request.Request(url, data=body, method="POST")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _assert_still_serving(http_client, tiny, X):
    assert http_client.health()["status"] == "ok"
    np.testing.assert_array_equal(http_client.predict(X), tiny[0].forward(X))


def test_encrypted_prediction_end_to_end(http_client, tiny, X_test):
    health = http_client.health()
    assert {"qnn_sklearn", "concrete-python"} <= set(health)
    key_id = http_client.upload_evaluation_keys()
    assert http_client.upload_evaluation_keys() == key_id  # uploaded once
    np.testing.assert_array_equal(http_client.predict(X_test), tiny[0].forward(X_test))
    assert http_client.health()["keys"] >= 1


def test_bad_requests_get_4xx_and_the_service_keeps_serving(
    service, http_client, other_model, tiny, X_test
):
    key_id = http_client.upload_evaluation_keys()
    encrypted = http_client.model_client.quantize_encrypt_serialize(X_test[:2])
    predict = f"{service}/predict?key_id={key_id}"
    cases = {
        "unknown key id": (f"{service}/predict?key_id=nope", encrypted, None, 404),
        "truncated ciphertext": (predict, encrypted[:-7], None, 400),
        "garbage ciphertext": (predict, b"\x13" * 500, None, 400),
        "garbage in a frame": (predict, framing.pack([b"\x00" * 300]), None, 400),
        "foreign ciphertext": (
            predict,
            other_model[1].quantize_encrypt_serialize(np.zeros((1, 4))),
            None,
            400,
        ),
        "wrong content type": (predict, encrypted, "application/json", 415),
        "no content type": (predict, encrypted, "", 415),
        "too large": (predict, b"\x00" * int(MAX_INPUT_MB * 2**20 + 1), None, 413),
        "empty body": (predict, b"", None, 400),
        "missing key id": (f"{service}/predict", encrypted, None, 422),
        "garbage keys": (f"{service}/keys", b"not keys" * 100, None, 400),
    }
    for name, (url, body, content_type, status) in cases.items():
        got, detail = _post(
            url, body, "application/octet-stream" if content_type is None else content_type
        )
        assert got == status, (name, got, detail)
        assert http_client.health()["status"] == "ok", name
    _assert_still_serving(http_client, tiny, X_test[:2])


def test_keys_of_another_model_crash_only_a_worker(service, http_client, other_model, tiny, X_test):
    """concrete-python segfaults on evaluation keys of another circuit; the service answers 422
    and serves on, because the circuit runs in a worker process."""
    status, body = _post(f"{service}/keys", other_model[2])
    assert status == 201
    foreign_key_id = json.loads(body)["key_id"]
    encrypted = http_client.model_client.quantize_encrypt_serialize(X_test[:1])
    status, detail = _post(f"{service}/predict?key_id={foreign_key_id}", encrypted)
    assert status == 422, detail
    assert b"evaluation keys" in detail
    status, _ = _post(f"{service}/predict?key_id={foreign_key_id}", encrypted)
    assert status == 422
    _assert_still_serving(http_client, tiny, X_test[:2])


def test_deleted_keys_are_unknown(service, http_client, key_dir, model_dir, tiny, X_test):
    other = FHEHTTPClient(service, FHEModelClient(model_dir, key_dir=key_dir))
    other.upload_evaluation_keys()
    key_id = other.key_id
    other.delete_evaluation_keys()
    with pytest.raises(HTTPServiceError) as error:
        other._call("DELETE", f"/keys/{key_id}")
    assert error.value.status == 404
    status, _ = _post(f"{service}/predict?key_id={key_id}", b"x")
    assert status == 404
    _assert_still_serving(http_client, tiny, X_test[:1])


def test_bench_times_the_service(service, model_dir, capsys):
    main(["bench", str(model_dir), "--rows", "2", "--workers", "1", "--url", service])
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 2 and report["n_workers"] == 1
    assert report["keygen_s"] > 0 and report["evaluation_keys_bytes"] > 0
    assert set(report["http"]) == {"upload_keys_s", "first_row_s", "one_row_s"}
