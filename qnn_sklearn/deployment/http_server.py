"""HTTP inference service (FastAPI): evaluation keys uploaded once, ciphertexts in and out.

Endpoints (bodies are raw bytes, ``Content-Type: application/octet-stream``):

=====================  ===================================================================  ====
``GET /health``        status, versions, number of stored key sets (never gated)            200
``GET /client.zip``    the model's client archive, for ``FHEModelClient``                   200
``POST /keys``         ``framing.pack([evaluation_keys, probe])`` → ``{"key_id": ...}``     201
``DELETE /keys``       forget the key set named by ``X-Key-Id``                             204
``POST /predict``      framed ciphertexts → framed results, with ``X-Key-Id``               200
=====================  ===================================================================  ====

Headers: ``X-Client-Token`` (``/keys``, ``/predict``): the client's secret, at least 32 URL-safe
characters; the key sets it uploads are its own (:mod:`.key_owners`). ``Authorization: Bearer
<api token>`` on everything but ``/health`` when the service was started with an API token.
Key ids and tokens travel in headers, never in the URL, so the access log does not record them.

Errors: 400 malformed keys or ciphertexts, 401 missing or wrong token, 404 unknown key id (or
another client's: they are not told apart), 408 stalled body, 413 body or rows over the limit,
415 wrong content type, 422 keys of another model (refused at upload by :mod:`.key_check`; a
crash reproduced alone at ``/predict`` also removes them), 503 store full or too many uploads
at once. The event loop never blocks: uploads stream to disk, checks and FHE runs happen in
other processes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

try:
    import anyio
    from fastapi import FastAPI, HTTPException, Request, Response
    from fastapi.responses import FileResponse
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "The HTTP service needs FastAPI and uvicorn: pip install 'qnn_sklearn[serve]'."
    ) from error

from . import framing
from .artifacts import CLIENT_ZIP, current_versions
from .executor import FHEBatchRunner, WorkerCrashedError
from .framing import FramingError
from .http_client import CLIENT_TOKEN_HEADER, KEY_ID_HEADER, OCTET_STREAM
from .key_check import KeyCheckError, check_key_upload
from .key_owners import (
    CLIENT_TOKEN_PATTERN,
    KEY_ID_PATTERN,
    KeyOwners,
    StoreFullError,
    token_digest,
)

DEFAULT_MAX_KEY_BYTES = 1 << 30
DEFAULT_MAX_INPUT_BYTES = 64 << 20
_WRITE_BYTES = 1 << 20
_CHUNK_TIMEOUT_S = 30.0
_SLOT_WAIT_S = 30.0
_LOG = logging.getLogger("qnn_sklearn.serve")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def _unknown_key_id() -> HTTPException:
    return HTTPException(
        404,
        f"Unknown key id for this client token: POST the keys to /keys and send the "
        f"key id it returns in {KEY_ID_HEADER}, with the same {CLIENT_TOKEN_HEADER}.",
    )


def _check_body_headers(request: Request, limit: int) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != OCTET_STREAM:
        raise HTTPException(
            415, f"Send the bytes as Content-Type: {OCTET_STREAM}, not {content_type[:60]!r}."
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 20:
            raise HTTPException(400, "Invalid Content-Length header.")
        if int(declared) > limit:
            raise HTTPException(413, f"Body of {declared} bytes exceeds {limit} bytes.")


async def _chunks(request: Request, limit: int):
    """The body's chunks, with ``limit`` enforced while reading and a per-chunk timeout."""
    size = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), _CHUNK_TIMEOUT_S)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise HTTPException(408, f"No body bytes for {_CHUNK_TIMEOUT_S:g} s.") from None
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"Body exceeds {limit} bytes.")
        yield chunk
    if size == 0:
        raise HTTPException(400, "Empty body.")


async def _acquire(slots: asyncio.Semaphore, what: str) -> None:
    try:
        await asyncio.wait_for(slots.acquire(), _SLOT_WAIT_S)
    except TimeoutError:
        raise HTTPException(
            503, f"Too many {what} in progress: retry later.", headers={"Retry-After": "5"}
        ) from None


def create_app(
    model_dir,
    n_workers: int | None = None,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    max_keys: int = 16,
    max_keys_per_client: int = 2,
    key_idle_s: float = 3600.0,
    key_check_s: float = 300.0,
    max_uploads: int = 2,
    max_rows: int = 1024,
    api_token: str | None = None,
) -> FastAPI:
    """The FastAPI application serving the model saved by ``FHEModelDev`` in ``model_dir``.

    Parameters
    ----------
    model_dir : str or Path
        Directory with ``server.zip`` and ``client.zip``.
    n_workers : int, optional
        FHE worker processes (default: one per core).
    max_key_bytes, max_input_bytes : int
        Largest accepted body for ``POST /keys`` and ``POST /predict``.
    max_keys, max_keys_per_client : int
        Key sets kept by the service, and per client token (a client's new upload evicts its
        own oldest set, never another client's).
    key_idle_s : float
        When the service is full, key sets unused for this long may be dropped for new ones.
    key_check_s : float
        Time limit of the check of uploaded keys (deserialization and one circuit run).
    max_uploads : int
        Key uploads received and checked at once; bounds disk, memory and processes.
    max_rows : int
        Rows (ciphertexts) of one prediction request; bounds the size of its answer.
    api_token : str, optional
        When given, every endpoint but ``/health`` needs ``Authorization: Bearer <api_token>``.
    """
    model_dir = Path(model_dir)
    client_zip = model_dir / CLIENT_ZIP
    runner = FHEBatchRunner(model_dir, n_workers)
    owners = KeyOwners(max_keys_per_client, max_keys, key_idle_s)
    upload_dir = runner.work_dir / "uploads"
    upload_dir.mkdir()
    uploads = asyncio.Semaphore(max_uploads)
    # Predictions in flight: each holds its body and a thread waiting for the workers.
    predictions = asyncio.Semaphore(4 * runner.n_workers)
    prediction_threads = anyio.CapacityLimiter(4 * runner.n_workers)
    api_digest = None if api_token is None else token_digest(api_token)

    @asynccontextmanager
    async def lifespan(app):
        yield
        runner.close()

    app = FastAPI(title="qnn_sklearn encrypted inference", lifespan=lifespan)
    app.state.runner = runner

    def authorize(request: Request) -> None:
        if api_digest is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        digest = token_digest(token.strip())
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, api_digest):
            raise _unauthorized("This service needs Authorization: Bearer <its API token>.")

    def client_token(request: Request) -> str:
        token = request.headers.get(CLIENT_TOKEN_HEADER, "")
        if not CLIENT_TOKEN_PATTERN.fullmatch(token):
            raise _unauthorized(
                f"Send {CLIENT_TOKEN_HEADER}: a secret of 32 to 256 URL-safe characters "
                "(secrets.token_urlsafe(32)); FHEHTTPClient makes one."
            )
        return token

    def owned_key_id(request: Request) -> str:
        token = client_token(request)
        key_id = request.headers.get(KEY_ID_HEADER, "")
        if not KEY_ID_PATTERN.fullmatch(key_id) or not owners.owns(token, key_id):
            raise _unknown_key_id()
        return key_id

    def forget(key_id: str) -> None:
        owners.remove(key_id)
        try:
            runner.remove_keys(key_id)
        except KeyError:
            pass

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", **current_versions(), "keys": len(owners)}

    @app.get("/client.zip")
    async def get_client_zip(request: Request):
        authorize(request)
        return FileResponse(client_zip, media_type="application/zip", filename=CLIENT_ZIP)

    @app.post("/keys", status_code=201)
    async def upload_keys(request: Request) -> dict:
        authorize(request)
        token = client_token(request)
        _check_body_headers(request, max_key_bytes)
        await _acquire(uploads, "key uploads")
        upload = upload_dir / f"{uuid.uuid4().hex}.upload"
        key_path = runner.new_key_path()
        adopted = False
        try:
            with open(upload, "wb") as file:
                buffer = bytearray()
                async for chunk in _chunks(request, max_key_bytes):
                    buffer += chunk
                    if len(buffer) >= _WRITE_BYTES:
                        await anyio.to_thread.run_sync(file.write, buffer)
                        buffer = bytearray()
                await anyio.to_thread.run_sync(file.write, buffer)
            await anyio.to_thread.run_sync(
                check_key_upload, model_dir, upload, key_path, runner.work_dir, key_check_s
            )
            for key_id in owners.make_room(token):
                forget(key_id)
            key_id = runner.adopt_keys(key_path)
            owners.add(key_id, token)
            adopted = True
        except KeyCheckError as error:
            _LOG.warning("Refused a key upload: %s", str(error)[:500])
            raise HTTPException(error.status, str(error)) from None
        except StoreFullError as error:
            raise HTTPException(503, str(error), headers={"Retry-After": "60"}) from None
        finally:  # refused, disconnected or cancelled: nothing of the upload is kept
            uploads.release()
            upload.unlink(missing_ok=True)
            if not adopted:
                key_path.unlink(missing_ok=True)
        return {"key_id": key_id}

    @app.delete("/keys", status_code=204)
    async def delete_keys(request: Request):
        authorize(request)
        forget(owned_key_id(request))
        return Response(status_code=204)

    @app.post("/predict")
    async def predict(request: Request):
        authorize(request)
        key_id = owned_key_id(request)
        _check_body_headers(request, max_input_bytes)
        await _acquire(predictions, "predictions")
        try:
            body = b"".join([chunk async for chunk in _chunks(request, max_input_bytes)])
            if framing.count(body) > max_rows:
                raise HTTPException(
                    413, f"More than {max_rows} rows in one request: send fewer rows per request."
                )
            result = await anyio.to_thread.run_sync(
                runner.run, body, key_id, limiter=prediction_threads
            )
        except KeyError:
            raise _unknown_key_id() from None
        except (FramingError, ValueError) as error:
            raise HTTPException(400, str(error)) from None
        except WorkerCrashedError as error:
            forget(key_id)  # proven: the crash came back when this request ran alone
            raise HTTPException(422, f"{error} These keys were removed.") from None
        finally:
            predictions.release()
        return Response(result, media_type=OCTET_STREAM)

    return app


def read_api_token(path) -> str:
    """The API token in file ``path`` (first line); refuses files others can read."""
    path = Path(path)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise ValueError(
            f"{path} can be read by other users: chmod 600 it, it holds the service's API token."
        )
    token = path.read_text().strip()
    if len(token) < 16:
        raise ValueError(
            f"The API token in {path} is shorter than 16 characters: make a longer one."
        )
    return token


def serve(
    model_dir,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **app_options,
) -> None:
    """Run the service with uvicorn until interrupted (``qnn-sklearn serve``)."""
    import uvicorn

    app = create_app(model_dir, **app_options)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
