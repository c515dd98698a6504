"""Client of the HTTP inference service (standard library only: ``http.client``)."""

from __future__ import annotations

import http.client
import json
import secrets
import urllib.parse
from pathlib import Path

import numpy as np

from . import framing
from .artifacts import CLIENT_ZIP
from .fhe_model import FHEModelClient

OCTET_STREAM = "application/octet-stream"
CLIENT_TOKEN_HEADER = "X-Client-Token"
KEY_ID_HEADER = "X-Key-Id"


class HTTPServiceError(RuntimeError):
    """The service answered with an error status; ``status`` and ``detail`` say which."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class FHEHTTPClient:
    """Encrypted predictions through ``qnn-sklearn serve``.

    The secret key never leaves ``model_client``; the service gets the evaluation keys once
    (:meth:`upload_evaluation_keys`) and then ciphertexts only. Every request carries this
    client's token (``X-Client-Token``): the keys it uploads can be used and deleted with that
    token only. Send it over TLS when the service is not on this machine.

    Parameters
    ----------
    base_url : str
        For example ``"http://127.0.0.1:8000"``.
    model_client : FHEModelClient
        The client of the same model (see :meth:`download_client`).
    timeout : float
        Seconds to wait for one HTTP answer.
    api_token : str, optional
        The service's API token, when it was started with ``--api-token-file``.
    client_token : str, optional
        This client's secret; default: a new random one (``secrets.token_urlsafe(32)``). Pass
        the same one to use, from another process, keys uploaded earlier.
    """

    def __init__(
        self,
        base_url: str,
        model_client: FHEModelClient,
        timeout: float = 600.0,
        api_token: str | None = None,
        client_token: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model_client = model_client
        self.timeout = timeout
        self.api_token = api_token
        self.client_token = client_token or secrets.token_urlsafe(32)
        self.key_id: str | None = None

    @staticmethod
    def download_client(
        base_url: str, path_dir, timeout: float = 60.0, api_token: str | None = None
    ) -> Path:
        """Fetch the service's ``client.zip`` into ``path_dir``; returns the directory."""
        path_dir = Path(path_dir)
        path_dir.mkdir(parents=True, exist_ok=True)
        url = base_url.rstrip("/") + "/" + CLIENT_ZIP
        headers = _auth_headers(api_token)
        (path_dir / CLIENT_ZIP).write_bytes(_request("GET", url, None, headers, timeout))
        return path_dir

    def _call(self, method: str, path: str, body: bytes | None = None, key_id=None) -> bytes:
        headers = {**_auth_headers(self.api_token), CLIENT_TOKEN_HEADER: self.client_token}
        if body is not None:
            headers["Content-Type"] = OCTET_STREAM
        if key_id is not None:
            headers[KEY_ID_HEADER] = key_id
        return _request(method, self.base_url + path, body, headers, self.timeout)

    def health(self) -> dict:
        return json.loads(self._call("GET", "/health"))

    def key_upload(self) -> bytes:
        """The body of ``POST /keys``: the evaluation keys and a probe ciphertext.

        The service runs the circuit once on the probe (an encryption of zeros) with the keys
        before it accepts them: that is how it refuses another model's keys at upload.
        """
        keys = self.model_client.get_serialized_evaluation_keys()
        zeros = np.zeros((1, *self.model_client.module.input_shape))
        probe = framing.unpack(self.model_client.quantize_encrypt_serialize(zeros))[0]
        return framing.pack([keys, probe])

    def upload_evaluation_keys(self, force: bool = False) -> str:
        """Send the evaluation keys once; returns (and remembers) the service's key id."""
        if self.key_id is None or force:
            self.key_id = json.loads(self._call("POST", "/keys", self.key_upload()))["key_id"]
        return self.key_id

    def delete_evaluation_keys(self) -> None:
        if self.key_id is not None:
            self._call("DELETE", "/keys", key_id=self.key_id)
            self.key_id = None

    def run(self, serialized_encrypted_input: bytes) -> bytes:
        """Framed ciphertexts to the service, framed encrypted results back."""
        key_id = self.upload_evaluation_keys()
        return self._call("POST", "/predict", serialized_encrypted_input, key_id=key_id)

    def predict(self, X) -> np.ndarray:
        """Encrypt ``X`` here, run remotely, decrypt here: ``predict_proba`` / ``predict``."""
        encrypted = self.model_client.quantize_encrypt_serialize(X)
        return self.model_client.deserialize_decrypt_dequantize(self.run(encrypted))


def _auth_headers(api_token: str | None) -> dict:
    return {} if api_token is None else {"Authorization": f"Bearer {api_token}"}


def _request(method, url, body, headers, timeout) -> bytes:
    """One HTTP exchange; :class:`HTTPServiceError` for an error status.

    ``http.client`` rather than ``urllib``: a service that refuses a request (say, a missing
    token) answers before it has read a large body and closes the connection; the answer is
    still read after the failed send, so the caller gets the 401 instead of a broken pipe.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"The service URL must start with http:// or https://, got {url[:100]!r}.")
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.hostname, parts.port, timeout=timeout)
    try:
        try:
            connection.request(method, parts.path or "/", body, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was sent: its answer follows
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    if response.status < 400:
        return raw
    try:
        detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        detail = raw.decode(errors="replace")
    raise HTTPServiceError(response.status, str(detail))
