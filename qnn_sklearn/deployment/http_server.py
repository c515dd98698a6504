"""HTTP inference service (FastAPI): evaluation keys uploaded once, ciphertexts in and out.

Endpoints (bodies are raw bytes, ``Content-Type: application/octet-stream``):

=====================  ===========================================================  ==========
``GET /health``        status, versions, number of stored keys                      200
``GET /client.zip``    the model's client archive, for ``FHEModelClient``            200
``POST /keys``         serialized evaluation keys → ``{"key_id": ...}``              201
``DELETE /keys/{id}``  forget the keys                                               204
``POST /predict``      ``?key_id=...``; framed ciphertexts → framed results          200
=====================  ===========================================================  ==========

Errors: 400 malformed keys or ciphertexts, 404 unknown key id, 413 body over the limit,
415 wrong content type, 422 keys that crashed the FHE runtime (another model's keys; the crash
stays in a worker process, see :mod:`.executor`). The service keeps serving after each.
"""

from contextlib import asynccontextmanager
from pathlib import Path

try:
    from fastapi import FastAPI, HTTPException, Request, Response
    from fastapi.responses import FileResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "The HTTP service needs FastAPI and uvicorn: pip install 'qnn_sklearn[serve]'."
    ) from error

from .artifacts import CLIENT_ZIP, current_versions
from .executor import FHEBatchRunner, WorkerCrashedError
from .framing import FramingError

OCTET_STREAM = "application/octet-stream"
DEFAULT_MAX_KEY_BYTES = 1 << 30
DEFAULT_MAX_INPUT_BYTES = 64 << 20
_MAX_REJECTED_IDS = 1024


def create_app(
    model_dir,
    n_workers: int | None = None,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    max_keys: int = 16,
):
    """The FastAPI application serving the model saved by ``FHEModelDev`` in ``model_dir``.

    Parameters
    ----------
    model_dir : str or Path
        Directory with ``server.zip`` and ``client.zip``.
    n_workers : int, optional
        FHE worker processes (default: one per core).
    max_key_bytes, max_input_bytes : int
        Largest accepted body for ``POST /keys`` and ``POST /predict``.
    max_keys : int
        Evaluation keys kept at once (least recently uploaded evicted first).
    """
    model_dir = Path(model_dir)
    client_zip = model_dir / CLIENT_ZIP
    runner = FHEBatchRunner(model_dir, n_workers, max_keys=max_keys)
    rejected: dict[str, None] = {}

    @asynccontextmanager
    async def lifespan(app):
        yield
        runner.close()

    app = FastAPI(title="qnn_sklearn encrypted inference", lifespan=lifespan)
    app.state.runner = runner

    async def read_body(request: Request, limit: int) -> bytes:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != OCTET_STREAM:
            raise HTTPException(
                415, f"Send the bytes as Content-Type: {OCTET_STREAM}, not {content_type!r}."
            )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, "Invalid Content-Length header.")
            if int(declared) > limit:
                raise HTTPException(413, f"Body of {declared} bytes exceeds {limit} bytes.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"Body exceeds {limit} bytes.")
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body:
            raise HTTPException(400, "Empty body.")
        return body

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", **current_versions(), "keys": runner.n_keys}

    @app.get("/client.zip")
    def get_client_zip():
        return FileResponse(client_zip, media_type="application/zip", filename=CLIENT_ZIP)

    @app.post("/keys", status_code=201)
    async def upload_keys(request: Request) -> dict:
        body = await read_body(request, max_key_bytes)
        try:
            key_id = await run_in_threadpool(runner.add_keys, body)
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        return {"key_id": key_id}

    @app.delete("/keys/{key_id}", status_code=204)
    def delete_keys(key_id: str):
        try:
            runner.remove_keys(key_id)
        except KeyError:
            raise HTTPException(404, f"Unknown key id {key_id!r}.") from None
        return Response(status_code=204)

    @app.post("/predict")
    async def predict(request: Request, key_id: str):
        if key_id in rejected:
            raise HTTPException(422, "These evaluation keys crashed the FHE runtime before.")
        if not runner.has_keys(key_id):
            raise HTTPException(404, f"Unknown key id {key_id!r}: POST the keys to /keys first.")
        body = await read_body(request, max_input_bytes)
        try:
            result = await run_in_threadpool(runner.run, body, key_id)
        except KeyError as error:
            raise HTTPException(404, str(error.args[0] if error.args else error)) from None
        except (FramingError, ValueError) as error:
            raise HTTPException(400, str(error)) from None
        except WorkerCrashedError as error:
            rejected[key_id] = None
            while len(rejected) > _MAX_REJECTED_IDS:
                rejected.pop(next(iter(rejected)))
            try:
                runner.remove_keys(key_id)
            except KeyError:
                pass
            raise HTTPException(422, str(error)) from None
        return Response(result, media_type=OCTET_STREAM)

    return app


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
