"""Throughput of encrypted inference for ``qnn-sklearn bench``: one row at a time vs a pool.

Kept apart from :mod:`.executor`, which serves requests: this module only measures it.
"""

from __future__ import annotations

import time

import numpy as np

from . import framing
from .executor import FHEBatchRunner
from .fhe_model import FHEModelClient, FHEModelServer


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
