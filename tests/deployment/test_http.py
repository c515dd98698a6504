"""The HTTP service started for real (``python -m qnn_sklearn.deployment.cli serve``)."""

from __future__ import annotations

import json
import os
import pickle
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from qnn_sklearn.deployment import FHEModelClient, framing
from qnn_sklearn.deployment.cli import main
from qnn_sklearn.deployment.http_client import FHEHTTPClient, HTTPServiceError
from qnn_sklearn.deployment.key_check import KeyCheckError, check_key_upload
from qnn_sklearn.deployment.key_owners import KeyOwners, StoreFullError

MAX_INPUT_MB = 0.25
API_TOKEN = "api-token-of-the-gated-test-service"


class Service:
    """A ``serve`` subprocess: its URL, process, log file and temporary directory."""

    def __init__(self, model_dir, python, env, directory: Path, *options: str):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.tmp = directory / "tmp"  # the service's TMPDIR: its work directory goes there
        self.tmp.mkdir()
        self.log = directory / "log.txt"
        command = [python, "-m", "qnn_sklearn.deployment.cli", "serve", str(model_dir)]
        command += ["--port", str(port), "--workers", "1", *options]
        with open(self.log, "wb") as log_file:
            self.process = subprocess.Popen(
                command, env={**env, "TMPDIR": str(self.tmp)}, stdout=log_file, stderr=log_file
            )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    assert json.loads(response.read())["status"] == "ok"
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    pytest.fail(f"The service did not start:\n{self.log.read_text()}")
                time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start(model_dir, python, env, tmp_path_factory, *options) -> Service:
    return Service(model_dir, python, env, tmp_path_factory.mktemp("service"), *options)


@pytest.fixture(scope="module")
def service(model_dir, python, subprocess_env, tmp_path_factory):
    """A running service for ``model_dir`` (1 worker, at most 4 key sets, 2 per client)."""
    options = ["--max-input-mb", str(MAX_INPUT_MB), "--max-key-mb", "256"]
    options += ["--max-keys", "4", "--max-keys-per-client", "2", "--log-level", "info"]
    running = _start(model_dir, python, subprocess_env, tmp_path_factory, *options)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client_dir(service, tmp_path_factory) -> Path:
    """client.zip as the service serves it."""
    return FHEHTTPClient.download_client(service.url, tmp_path_factory.mktemp("client"))


@pytest.fixture
def new_client(service, client_dir, key_dir):
    """Makes FHEHTTPClients of the model, each with its own client token; their keys are
    deleted after the test, so that tests do not fill each other's quota."""
    made = []

    def make(**options) -> FHEHTTPClient:
        made.append(FHEHTTPClient(service.url, FHEModelClient(client_dir, key_dir=key_dir)))
        for name, value in options.items():
            setattr(made[-1], name, value)
        return made[-1]

    yield make
    for client in made:
        try:
            client.delete_evaluation_keys()
        except HTTPServiceError:
            pass


def _request(url, method="POST", body=None, headers=None):
    headers = {"Content-Type": "application/octet-stream", **(headers or {})}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _status(call) -> int:
    with pytest.raises(HTTPServiceError) as error:
        call()
    return error.value.status


def _assert_predicts(http: FHEHTTPClient, tiny, X) -> None:
    np.testing.assert_array_equal(http.predict(X), tiny[0].forward(X))


def test_encrypted_prediction_end_to_end(service, new_client, tiny, X_test):
    http = new_client()
    assert {"qnn_sklearn", "concrete-python"} <= set(http.health())
    key_id = http.upload_evaluation_keys()
    assert http.upload_evaluation_keys() == key_id  # uploaded once
    _assert_predicts(http, tiny, X_test)
    assert http.health()["keys"] >= 1
    # Neither the key id nor the client token reaches the access log.
    log = service.log.read_text()
    assert '"POST /predict HTTP/1.1" 200' in log
    assert key_id not in log and http.client_token not in log


def test_only_the_owner_uses_and_deletes_its_keys(new_client, tiny, X_test):
    owner, intruder = new_client(), new_client()
    key_id = owner.upload_evaluation_keys()
    intruder.key_id = key_id  # a leaked key id, without the owner's token
    assert _status(lambda: intruder.predict(X_test[:1])) == 404
    assert _status(intruder.delete_evaluation_keys) == 404
    anonymous = new_client(client_token="short")
    anonymous.key_id = key_id
    assert _status(lambda: anonymous.predict(X_test[:1])) == 401
    assert _status(anonymous.delete_evaluation_keys) == 401
    _assert_predicts(owner, tiny, X_test[:2])  # the owner's keys survived all of that
    owner.delete_evaluation_keys()
    owner.key_id = key_id
    assert _status(lambda: owner.run(b"x")) == 404


def test_eviction_is_per_client(new_client, tiny, X_test):
    """A client's third upload evicts its own first key set, never another client's; when the
    service is full of recently used sets, a newcomer is refused (503) and nobody loses keys."""
    other = new_client()
    other_key_id = other.upload_evaluation_keys()
    busy = new_client()
    key_ids = [busy.upload_evaluation_keys(force=True) for _ in range(3)]
    busy.key_id = key_ids[0]
    assert _status(lambda: busy.run(b"x")) == 404
    busy.key_id = key_ids[2]
    _assert_predicts(busy, tiny, X_test[:1])
    assert other.upload_evaluation_keys() == other_key_id
    _assert_predicts(other, tiny, X_test[:1])
    # 4 sets held (other: 1, busy: 2, and one more): a fourth client finds the service full.
    new_client().upload_evaluation_keys()
    assert _status(new_client().upload_evaluation_keys) == 503
    _assert_predicts(other, tiny, X_test[:1])
    busy.key_id = key_ids[1]
    _assert_predicts(busy, tiny, X_test[:1])
    busy.delete_evaluation_keys()
    busy.key_id = key_ids[2]  # deleted after the test


def test_a_full_store_drops_only_idle_key_sets():
    """Unit test of the bookkeeping behind the service's quotas (no server)."""
    tokens = [secrets.token_urlsafe(32) for _ in range(3)]
    ids = [f"{index:032x}" for index in range(4)]
    owners = KeyOwners(per_client=1, capacity=2, idle_s=3600)
    for key_id, token in zip(ids[:2], tokens[:2]):
        assert owners.make_room(token) == []
        owners.add(key_id, token)
    with pytest.raises(StoreFullError, match="--max-keys"):
        owners.make_room(tokens[2])  # all sets in recent use: the newcomer waits
    assert owners.make_room(tokens[0]) == [ids[0]]  # a client replaces its own set
    owners.add(ids[2], tokens[0])
    assert owners.owns(tokens[1], ids[1]) and not owners.owns(tokens[1], ids[2])
    owners.idle_s = -1.0  # now every set counts as idle: the least recently used one goes
    assert owners.make_room(tokens[2]) == [ids[2]]
    owners.add(ids[3], tokens[2])
    assert owners.owns(tokens[2], ids[3]) and not owners.owns(tokens[0], ids[2])
    assert not any(token.encode() in pickle.dumps(owners) for token in tokens)  # digests only


def test_bad_keys_are_refused_at_upload(service, new_client, other_model, tiny, X_test):
    http = new_client()
    upload = http.key_upload()
    keys, probe = framing.unpack(upload)
    other_client = other_model[1]
    other_probe = framing.unpack(other_client.quantize_encrypt_serialize(np.zeros((1, 4))))[0]
    cases = {
        "truncated upload": (upload[: 1 << 16], 400),
        "truncated keys": (framing.pack([keys[: 1 << 16], probe]), 400),
        "garbage keys": (framing.pack([b"not keys" * 100, probe]), 400),
        "keys alone": (keys, 400),
        "keys of another model": (framing.pack([other_model[2], probe]), 422),
        "another model's upload": (framing.pack([other_model[2], other_probe]), 422),
    }
    headers = {"X-Client-Token": http.client_token}
    n_keys, log_bytes = http.health()["keys"], service.log.stat().st_size
    details = {}
    for name, (body, status) in cases.items():
        got, details[name] = _request(f"{service.url}/keys", body=body, headers=headers)
        assert got == status, (name, got, details[name])
    assert http.health()["keys"] == n_keys
    assert b"truncated" in details["truncated keys"]
    # The runtime's crash report (HPX prints its whole configuration) is summarized in the
    # answer and in one log line, not streamed to the service's stderr.
    assert b"bytes to stderr" in details["keys of another model"]
    log = service.log.read_text()
    assert "HPX_WITH" not in log
    assert len(log.encode()) - log_bytes < 1000 * len(cases)
    _assert_predicts(http, tiny, X_test[:2])


def test_the_key_check_has_a_time_limit_and_leaves_only_the_keys(
    model_dir, fhe_client, evaluation_keys, tmp_path
):
    """The check itself (no server): killed at its time limit; else the keys alone are kept."""
    probe = framing.unpack(fhe_client.quantize_encrypt_serialize(np.zeros((1, 3))))[0]
    upload, keys_out = tmp_path / "upload", tmp_path / "keys.evk"
    upload.write_bytes(framing.pack([evaluation_keys, probe]))
    with pytest.raises(KeyCheckError, match="within 0.001 s") as error:
        check_key_upload(model_dir, upload, keys_out, tmp_path, timeout_s=0.001)
    assert error.value.status == 422 and not keys_out.exists()
    check_key_upload(model_dir, upload, keys_out, tmp_path, timeout_s=300)
    assert keys_out.read_bytes() == evaluation_keys
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keys.evk", "upload"]


def test_bad_requests_get_4xx_and_the_service_keeps_serving(
    service, new_client, other_model, tiny, X_test
):
    http = new_client()
    key_id = http.upload_evaluation_keys()
    encrypted = http.model_client.quantize_encrypt_serialize(X_test[:2])
    predict = f"{service.url}/predict"
    owner = {"X-Client-Token": http.client_token, "X-Key-Id": key_id}
    huge_key_id = {"X-Client-Token": http.client_token, "X-Key-Id": "7" * 20_000}
    cases = {
        "unknown key id": (encrypted, {**owner, "X-Key-Id": "0" * 32}, 404),
        "huge key id": (encrypted, huge_key_id, 404),
        "no client token": (encrypted, {"X-Key-Id": key_id}, 401),
        "truncated ciphertext": (encrypted[:-7], owner, 400),
        "garbage ciphertext": (b"\x13" * 500, owner, 400),
        "garbage in a frame": (framing.pack([b"\x00" * 300]), owner, 400),
        "foreign ciphertext": (
            other_model[1].quantize_encrypt_serialize(np.zeros((1, 4))),
            owner,
            400,
        ),
        "wrong content type": (encrypted, {**owner, "Content-Type": "application/json"}, 415),
        "too large": (b"\x00" * int(MAX_INPUT_MB * 2**20 + 1), owner, 413),
        "empty body": (b"", owner, 400),
    }
    for name, (body, headers, status) in cases.items():
        got, detail = _request(predict, body=body, headers=headers)
        assert got == status, (name, got, detail)
        assert len(detail) < 1000, name  # nothing unbounded is echoed back
    _assert_predicts(http, tiny, X_test[:2])


def test_api_token_gates_everything_but_health(
    model_dir, python, subprocess_env, tmp_path_factory, key_dir, tiny, X_test
):
    token_file = tmp_path_factory.mktemp("token") / "api_token"
    token_file.write_text(API_TOKEN + "\n")
    token_file.chmod(0o600)
    gated = _start(
        model_dir, python, subprocess_env, tmp_path_factory, "--api-token-file", str(token_file)
    )
    try:
        client_dir = tmp_path_factory.mktemp("gated_client")
        for token in (None, "wrong-token-of-the-right-length-x"):
            with pytest.raises(HTTPServiceError) as error:
                FHEHTTPClient.download_client(gated.url, client_dir, api_token=token)
            assert error.value.status == 401
        FHEHTTPClient.download_client(gated.url, client_dir, api_token=API_TOKEN)
        model_client = FHEModelClient(client_dir, key_dir=key_dir)
        stranger = FHEHTTPClient(gated.url, model_client)
        assert stranger.health()["status"] == "ok"
        assert _status(stranger.upload_evaluation_keys) == 401
        member = FHEHTTPClient(gated.url, model_client, api_token=API_TOKEN)
        _assert_predicts(member, tiny, X_test[:1])
        stranger.key_id, stranger.client_token = member.key_id, member.client_token
        assert _status(lambda: stranger.run(b"x")) == 401
    finally:
        gated.stop()


def _descendants(pid: int) -> set[int]:
    """Process ids of all descendants of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sigkill_of_the_service_leaves_no_process_or_file(
    model_dir, python, subprocess_env, tmp_path_factory, key_dir, tiny, X_test
):
    killed = _start(model_dir, python, subprocess_env, tmp_path_factory)
    client_dir = FHEHTTPClient.download_client(killed.url, tmp_path_factory.mktemp("c"))
    _assert_predicts(
        FHEHTTPClient(killed.url, FHEModelClient(client_dir, key_dir=key_dir)), tiny, X_test
    )
    helpers = _descendants(killed.process.pid)
    assert len(helpers) >= 3  # forkserver, worker, janitor (and the resource tracker)
    assert [path.name for path in killed.tmp.iterdir()]  # its work directory, with the keys
    os.kill(killed.process.pid, signal.SIGKILL)
    killed.process.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        any(_alive(pid) for pid in helpers) or any(killed.tmp.iterdir())
    ):
        time.sleep(0.2)
    assert [pid for pid in helpers if _alive(pid)] == []
    assert list(killed.tmp.iterdir()) == []


def test_bench_times_the_service(service, model_dir, capsys):
    main(["bench", str(model_dir), "--rows", "2", "--workers", "1", "--url", service.url])
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 2 and report["n_workers"] == 1
    assert report["keygen_s"] > 0 and report["evaluation_keys_bytes"] > 0
    assert set(report["http"]) == {"upload_keys_s", "first_row_s", "one_row_s"}
