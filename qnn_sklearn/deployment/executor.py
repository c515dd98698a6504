"""Encrypted batch inference over a pool of worker processes, and its throughput measurement.

Each worker process loads ``server.zip`` once (pool initializer) and each set of evaluation keys
once (cached by key id), then runs shards of rows. Worker processes also isolate the server:
concrete-python does not check that evaluation keys belong to the circuit, and keys of another
model crash the runtime (segmentation fault). A crash breaks only the pool, which is rebuilt,
and surfaces as :class:`WorkerCrashedError`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from . import framing
from .fhe_model import FHEModelClient, FHEModelServer

_KEYS_CACHED_PER_WORKER = 4
_WORKER: dict = {}


class WorkerCrashedError(RuntimeError):
    """A worker process died while running the circuit (most likely: keys of another model)."""


def _init_worker(path_dir: str, threads_per_worker: int | None) -> None:
    if threads_per_worker is not None:
        # Read by OpenMP when the circuit first runs a parallel loop, so it applies here.
        os.environ["OMP_NUM_THREADS"] = str(threads_per_worker)
    _WORKER["server"] = FHEModelServer(path_dir).load()
    _WORKER["keys"] = OrderedDict()


def _worker_keys(key_id: str, key_path: str):
    cache = _WORKER["keys"]
    if key_id in cache:
        cache.move_to_end(key_id)
        return cache[key_id]
    try:
        serialized = Path(key_path).read_bytes()
    except FileNotFoundError:
        raise KeyError(f"Evaluation key id {key_id!r} was removed.") from None
    keys = FHEModelServer.load_evaluation_keys(serialized)
    cache[key_id] = keys
    while len(cache) > _KEYS_CACHED_PER_WORKER:
        cache.popitem(last=False)
    return keys


def _run_shard(key_id: str, key_path: str, blob: bytes) -> bytes:
    return _WORKER["server"].run(blob, _worker_keys(key_id, key_path))


def _load_keys(key_id: str, key_path: str) -> int:
    _worker_keys(key_id, key_path)
    time.sleep(0.05)  # let the other workers take the other warm-up tasks
    return os.getpid()


def _worker_context():
    """Workers fork from a server process that imported this module (and so the FHE runtime,
    numpy, ...) once: a new or rebuilt pool starts in milliseconds instead of re-importing
    everything per worker, and no worker inherits the threads of the parent (a web server)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class FHEBatchRunner:
    """Run framed ciphertexts on ``n_workers`` processes that share one server and its keys.

    Parameters
    ----------
    path_dir : str or Path
        Model directory with ``server.zip``.
    n_workers : int, optional
        Worker processes; default: the number of cores.
    threads_per_worker : int, optional
        OpenMP threads of each worker's FHE runtime; default ``max(1, cores // n_workers)`` so
        the workers do not oversubscribe the cores.
    max_keys : int
        Evaluation keys kept at once; adding more evicts the least recently added.
    """

    def __init__(
        self,
        path_dir,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        max_keys: int = 16,
    ):
        # Load once here too: version and safety checks fail early, in the caller's process.
        FHEModelServer(path_dir).load()
        self.path_dir = str(path_dir)
        cores = os.cpu_count() or 1
        self.n_workers = n_workers or cores
        self.threads_per_worker = threads_per_worker or max(1, cores // self.n_workers)
        self.max_keys = max_keys
        self._key_dir = Path(tempfile.mkdtemp(prefix="qnn-sklearn-evaluation-keys-"))
        self._keys: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            self.n_workers,
            mp_context=_worker_context(),
            initializer=_init_worker,
            initargs=(self.path_dir, self.threads_per_worker),
        )
        # Start the workers now (they import the FHE runtime and load the circuit) instead of
        # on the first request; nobody waits for these no-ops.
        for _ in range(self.n_workers):
            pool.submit(os.getpid)
        return pool

    # -- evaluation keys ----------------------------------------------------------------------

    def add_keys(self, serialized_evaluation_keys: bytes) -> str:
        """Store evaluation keys (checked to deserialize); returns their key id."""
        FHEModelServer.load_evaluation_keys(serialized_evaluation_keys)
        key_id = uuid.uuid4().hex
        path = self._key_dir / f"{key_id}.evk"
        path.write_bytes(serialized_evaluation_keys)
        with self._lock:
            self._keys[key_id] = path
            while len(self._keys) > self.max_keys:
                _, old = self._keys.popitem(last=False)
                old.unlink(missing_ok=True)
        return key_id

    @property
    def n_keys(self) -> int:
        return len(self._keys)

    def has_keys(self, key_id: str) -> bool:
        with self._lock:
            return key_id in self._keys

    def remove_keys(self, key_id: str) -> None:
        """Forget a key id; ``KeyError`` if unknown."""
        with self._lock:
            path = self._keys.pop(key_id)
        path.unlink(missing_ok=True)

    def _key_path(self, key_id: str) -> str:
        with self._lock:
            if key_id not in self._keys:
                raise KeyError(f"Unknown evaluation key id {key_id!r}: upload the keys first.")
            return str(self._keys[key_id])

    # -- running ------------------------------------------------------------------------------

    def _submit_all(self, calls):
        pool = self._pool
        try:
            futures = [pool.submit(*call) for call in calls]
            return [future.result() for future in futures]
        except BrokenProcessPool as error:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new_pool()
            pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerCrashedError(
                "The FHE runtime crashed on this request. concrete-python does not check that "
                "evaluation keys belong to the model, and keys of another model crash it: "
                "upload the evaluation keys of this model's client."
            ) from error

    def warm_up(self, key_id: str) -> None:
        """Start every worker and load these keys there (best effort), before timing."""
        key_path = self._key_path(key_id)
        self._submit_all([(_load_keys, key_id, key_path)] * (2 * self.n_workers))

    def run(self, serialized_encrypted_input: bytes, key_id: str, shard_rows: int | None = None):
        """Framed ciphertexts in, framed results out, rows sharded over the workers.

        ``KeyError`` for an unknown key id, ``ValueError`` for malformed ciphertexts,
        :class:`WorkerCrashedError` if the runtime crashed.
        """
        key_path = self._key_path(key_id)
        payloads = framing.unpack(serialized_encrypted_input)
        if shard_rows is None:
            shard_rows = max(1, -(-len(payloads) // self.n_workers))
        shards = [payloads[i : i + shard_rows] for i in range(0, len(payloads), shard_rows)]
        calls = [(_run_shard, key_id, key_path, framing.pack(shard)) for shard in shards]
        results = self._submit_all(calls)
        return framing.pack([item for blob in results for item in framing.unpack(blob)])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._key_dir, ignore_errors=True)

    def __enter__(self) -> FHEBatchRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def measure_throughput(path_dir, client: FHEModelClient, X, n_workers: int | None = None) -> dict:
    """Rows per second of encrypted inference: one row at a time vs sharded over processes.

    The sequential run calls ``FHEModelServer.run`` row by row in this process (with
    concrete-python's own loop parallelism); the parallel one uses :class:`FHEBatchRunner`.
    Key generation, encryption, decryption and pool start-up are not timed; both results are
    decrypted and checked equal.
    """
    encrypted = client.quantize_encrypt_serialize(X)
    evaluation_keys = client.get_serialized_evaluation_keys()
    payloads = framing.unpack(encrypted)
    server = FHEModelServer(path_dir).load()
    keys = server.load_evaluation_keys(evaluation_keys)
    server.run(framing.pack(payloads[:1]), keys)  # warm-up
    start = time.perf_counter()
    sequential = [server.run(framing.pack([payload]), keys) for payload in payloads]
    sequential_s = time.perf_counter() - start
    with FHEBatchRunner(path_dir, n_workers) as runner:
        key_id = runner.add_keys(evaluation_keys)
        runner.warm_up(key_id)
        runner.run(framing.pack(payloads[: runner.n_workers]), key_id, shard_rows=1)
        start = time.perf_counter()
        parallel = runner.run(encrypted, key_id)
        parallel_s = time.perf_counter() - start
        n_workers, threads = runner.n_workers, runner.threads_per_worker
    sequential_out = np.concatenate([client.deserialize_decrypt(blob) for blob in sequential])
    if not np.array_equal(sequential_out, client.deserialize_decrypt(parallel)):
        raise RuntimeError("Sequential and parallel FHE runs decrypted to different results.")
    rows = len(payloads)
    return {
        "rows": rows,
        "n_workers": n_workers,
        "threads_per_worker": threads,
        "sequential_s": sequential_s,
        "sequential_rows_per_s": rows / sequential_s,
        "latency_per_row_s": sequential_s / rows,
        "parallel_s": parallel_s,
        "parallel_rows_per_s": rows / parallel_s,
        "speedup": sequential_s / parallel_s,
    }
