"""Client of the HTTP inference service (standard library only: ``urllib``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from .artifacts import CLIENT_ZIP
from .fhe_model import FHEModelClient

OCTET_STREAM = "application/octet-stream"


class HTTPServiceError(RuntimeError):
    """The service answered with an error status; ``status`` and ``detail`` say which."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class FHEHTTPClient:
    """Encrypted predictions through ``qnn-sklearn serve``.

    The secret key never leaves ``model_client``; the service gets the evaluation keys once
    (:meth:`upload_evaluation_keys`) and then ciphertexts only.

    Parameters
    ----------
    base_url : str
        For example ``"http://127.0.0.1:8000"``.
    model_client : FHEModelClient
        The client of the same model (see :meth:`download_client`).
    timeout : float
        Seconds to wait for one HTTP answer.
    """

    def __init__(self, base_url: str, model_client: FHEModelClient, timeout: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.model_client = model_client
        self.timeout = timeout
        self.key_id: str | None = None

    @staticmethod
    def download_client(base_url: str, path_dir, timeout: float = 60.0) -> Path:
        """Fetch the service's ``client.zip`` into ``path_dir``; returns the directory."""
        path_dir = Path(path_dir)
        path_dir.mkdir(parents=True, exist_ok=True)
        url = base_url.rstrip("/") + "/" + CLIENT_ZIP
        (path_dir / CLIENT_ZIP).write_bytes(_request("GET", url, None, None, timeout))
        return path_dir

    def _call(self, method: str, path: str, body: bytes | None = None, **query) -> bytes:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        content_type = None if body is None else OCTET_STREAM
        return _request(method, url, body, content_type, self.timeout)

    def health(self) -> dict:
        return json.loads(self._call("GET", "/health"))

    def upload_evaluation_keys(self, force: bool = False) -> str:
        """Send the evaluation keys once; returns (and remembers) the service's key id."""
        if self.key_id is None or force:
            keys = self.model_client.get_serialized_evaluation_keys()
            self.key_id = json.loads(self._call("POST", "/keys", keys))["key_id"]
        return self.key_id

    def delete_evaluation_keys(self) -> None:
        if self.key_id is not None:
            self._call("DELETE", f"/keys/{self.key_id}")
            self.key_id = None

    def run(self, serialized_encrypted_input: bytes) -> bytes:
        """Framed ciphertexts to the service, framed encrypted results back."""
        key_id = self.upload_evaluation_keys()
        return self._call("POST", "/predict", serialized_encrypted_input, key_id=key_id)

    def predict(self, X) -> np.ndarray:
        """Encrypt ``X`` here, run remotely, decrypt here: ``predict_proba`` / ``predict``."""
        encrypted = self.model_client.quantize_encrypt_serialize(X)
        return self.model_client.deserialize_decrypt_dequantize(self.run(encrypted))


def _request(method, url, body, content_type, timeout) -> bytes:
    request = urllib.request.Request(url, data=body, method=method)
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
        except (ValueError, AttributeError):
            detail = raw.decode(errors="replace")
        raise HTTPServiceError(error.code, str(detail)) from None
