"""Encrypted batch inference over a pool of worker processes.

Each worker process loads ``server.zip`` once (pool initializer) and each set of evaluation keys
once (cached by key id), then runs shards of rows. Worker processes also isolate the server:
concrete-python does not check that evaluation keys belong to the circuit, and keys of another
model crash the runtime (segmentation fault). A crash breaks the whole pool, and so every
request in flight on it; the pool is replaced, and each of those requests is run again alone, in
a process of its own. Only a request that crashes there too is charged with the crash
(:class:`WorkerCrashedError`); the others get their results.

Everything the workers write (evaluation keys, concrete's extraction of ``server.zip``) lives in
one work directory, removed at :meth:`FHEBatchRunner.close`, per pool when a pool is replaced,
and by a janitor process if the owner is killed. Workers die with their owner, even on SIGKILL
(see :mod:`.lifetime`).
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.util
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from . import sharding
from .fhe_model import FHEModelServer
from .lifetime import die_with, die_with_parent, janitor
from .sharding import KeyCache

_WORKER: dict = {}


class WorkerCrashedError(RuntimeError):
    """The request crashed a worker process, and crashed it again when run alone."""


def _init_worker(path_dir: str, threads_per_worker: int, tmp_dir: str, owner_pid: int) -> None:
    die_with_parent()
    die_with(owner_pid)
    # Read by OpenMP when the circuit first runs a parallel loop, so it applies here.
    os.environ["OMP_NUM_THREADS"] = str(threads_per_worker)
    # concrete's Server.load extracts server.zip under it. A worker keeps its server for its
    # lifetime and may be killed, so FHEModelServer.close cannot be relied on: the runner
    # removes this pool's directory instead.
    tempfile.tempdir = tmp_dir
    _WORKER["server"] = FHEModelServer(path_dir).load()
    _WORKER["keys"] = KeyCache()


def _read_key_file(key_id: str, key_path: str) -> bytes:
    try:
        return Path(key_path).read_bytes()
    except FileNotFoundError:
        raise KeyError(f"Evaluation key id {key_id} was removed.") from None


def _worker_keys(key_id: str, key_path: str):
    return _WORKER["keys"].get(key_id, functools.partial(_read_key_file, key_id, key_path))


def _run_shard(key_id: str, key_path: str, blob: bytes) -> bytes:
    return _WORKER["server"].run(blob, _worker_keys(key_id, key_path))


def _load_keys(key_id: str, key_path: str) -> int:
    _worker_keys(key_id, key_path)
    time.sleep(0.05)  # let the other workers take the other warm-up tasks
    return os.getpid()


def worker_context():
    """Workers fork from a forkserver that imported this module (and so the FHE runtime,
    numpy, ...) once: a new or rebuilt pool starts in milliseconds instead of re-importing
    everything per worker, and no worker inherits the threads of the parent (a web server).
    The forkserver also imports :mod:`.forkserver_guard`, so that it dies with its parent."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, f"{__package__}.forkserver_guard"])
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

    Attributes
    ----------
    work_dir : Path
        Private directory of the runner (keys, workers' temporary files), removed at
        :meth:`close`, or by a janitor process when the owner dies without closing.
    """

    def __init__(
        self, path_dir, n_workers: int | None = None, threads_per_worker: int | None = None
    ):
        with FHEModelServer(path_dir):  # version and safety checks fail here, in the caller
            pass
        self.work_dir = Path(tempfile.mkdtemp(prefix="qnn-sklearn-runner-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.work_dir, True)
        self.path_dir = str(path_dir)
        cores = os.cpu_count() or 1
        self.n_workers = n_workers or cores
        self.threads_per_worker = threads_per_worker or max(1, cores // self.n_workers)
        self._key_dir = self.work_dir / "keys"
        self._key_dir.mkdir()
        self._key_ids: set[str] = set()  # each key's file is _key_dir / f"{key_id}.evk"
        self._lock = threading.Lock()
        self._alone = threading.Semaphore(self.n_workers)
        self._janitor = worker_context().Process(
            target=janitor,
            args=(os.getpid(), str(self.work_dir), multiprocessing.util.get_temp_dir()),
            daemon=True,
        )
        self._janitor.start()
        self._pool, self._pool_dir = self._new_pool(self.n_workers)

    def _new_pool(self, n_workers: int) -> tuple[ProcessPoolExecutor, Path]:
        directory = Path(tempfile.mkdtemp(prefix="pool-", dir=self.work_dir))
        pool = ProcessPoolExecutor(
            n_workers,
            mp_context=worker_context(),
            initializer=_init_worker,
            initargs=(self.path_dir, self.threads_per_worker, str(directory), os.getpid()),
        )
        # Start the workers now (they import the FHE runtime and load the circuit) instead of
        # on the first request; nobody waits for these no-ops.
        for _ in range(n_workers):
            pool.submit(os.getpid)
        return pool, directory

    @staticmethod
    def _retire(pool: ProcessPoolExecutor, directory: Path) -> None:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(directory, ignore_errors=True)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current pool's workers (started so far)."""
        return sorted(getattr(self._pool, "_processes", None) or {})

    # -- evaluation keys ----------------------------------------------------------------------

    def add_keys(self, serialized_evaluation_keys: bytes) -> str:
        """Store evaluation keys (checked to deserialize); returns their key id.

        The keys are not checked against the circuit: for keys from untrusted sources, check
        them first (:func:`.key_check.check_key_upload`) and use :meth:`adopt_keys`.
        """
        FHEModelServer.load_evaluation_keys(serialized_evaluation_keys)
        path = self.new_key_path()
        path.write_bytes(serialized_evaluation_keys)
        return self.adopt_keys(path)

    def new_key_path(self) -> Path:
        """A fresh file name in the runner's key directory, for :meth:`adopt_keys`."""
        return self._key_file(uuid.uuid4().hex)

    def _key_file(self, key_id: str) -> Path:
        return self._key_dir / f"{key_id}.evk"

    def adopt_keys(self, path: Path) -> str:
        """Register a key file written at :meth:`new_key_path`; returns its key id.

        ``ValueError`` for any other path: the runner finds a key's file from its id.
        """
        key_id = Path(path).stem
        if Path(path) != self._key_file(key_id):
            raise ValueError(f"{path} is not a path given by new_key_path().")
        with self._lock:
            self._key_ids.add(key_id)
        return key_id

    def remove_keys(self, key_id: str) -> None:
        """Forget a key id and delete its file; ``KeyError`` if unknown."""
        with self._lock:
            self._key_ids.remove(key_id)
        self._key_file(key_id).unlink(missing_ok=True)

    def _key_path(self, key_id: str) -> str:
        with self._lock:
            if key_id not in self._key_ids:
                raise KeyError("Unknown evaluation key id: upload the keys first.")
        return str(self._key_file(key_id))

    # -- running ------------------------------------------------------------------------------

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not broken:
                return  # another request replaced it already
            directory = self._pool_dir
            self._pool, self._pool_dir = self._new_pool(self.n_workers)
        self._retire(broken, directory)

    def _run_alone(self, calls) -> list:
        """Run ``calls`` in a one-process pool of their own (``BrokenProcessPool`` if it dies)."""
        with self._alone:
            pool, directory = self._new_pool(1)
            try:
                return [pool.submit(*call).result() for call in calls]
            finally:
                self._retire(pool, directory)

    def _submit_all(self, calls) -> list:
        pool = self._pool
        try:
            futures = [pool.submit(*call) for call in calls]
            return [future.result() for future in futures]
        except BrokenProcessPool:
            self._replace_pool(pool)
        # A worker died during this request: because of it, or of another request in flight
        # (or it was killed). Only a crash reproduced alone is this request's fault.
        try:
            return self._run_alone(calls)
        except BrokenProcessPool as error:
            raise WorkerCrashedError(
                "This request crashed the FHE runtime, twice (the second time alone). "
                "concrete-python does not check that evaluation keys belong to the model, and "
                "keys of another model crash it: upload the evaluation keys of this model's "
                "client."
            ) from error

    def warm_up(self, key_id: str) -> None:
        """Start every worker and load these keys there (best effort), before timing."""
        key_path = self._key_path(key_id)
        self._submit_all([(_load_keys, key_id, key_path)] * (2 * self.n_workers))

    def run(self, serialized_encrypted_input: bytes, key_id: str, shard_rows: int | None = None):
        """Framed ciphertexts in, framed results out, rows sharded over the workers.

        ``KeyError`` for an unknown key id, ``ValueError`` for malformed ciphertexts,
        :class:`WorkerCrashedError` if this request crashed the runtime.
        """
        key_path = self._key_path(key_id)
        shards = sharding.split(serialized_encrypted_input, self.n_workers, shard_rows)
        return sharding.join(self._submit_all([(_run_shard, key_id, key_path, s) for s in shards]))

    def close(self) -> None:
        """Stop the workers and remove the work directory (keys, extracted circuits)."""
        self._retire(self._pool, self._pool_dir)
        self._finalizer()
        if self._janitor.is_alive():
            self._janitor.terminate()
            self._janitor.join()

    def __enter__(self) -> FHEBatchRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
