"""Encrypted batch inference sharded over Dask workers (``pip install 'qnn_sklearn[distributed]'``).

A :class:`FHEModelServerPlugin` loads ``server.zip`` once on every worker; evaluation keys are
scattered once to every worker and deserialized there once (cached by key id). Each task runs a
shard of framed ciphertexts; the results come back in order::

    inference = DaskFHEInference(dask_client, "model_dir")
    key_id = inference.add_keys(fhe_client.get_serialized_evaluation_keys())
    encrypted_out = inference.run(fhe_client.quantize_encrypt_serialize(X), key_id)

For scikit-learn's own parallelism (``GridSearchCV`` under ``joblib.parallel_backend("dask")``)
nothing here is needed: a running ``distributed.Client`` is enough.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from . import sharding
from .fhe_model import FHEModelServer
from .sharding import KeyCache

try:
    from distributed import get_worker
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "Dask scale-out needs dask.distributed: pip install 'qnn_sklearn[distributed]'."
    ) from error


class FHEModelServerPlugin(WorkerPlugin):
    """Loads one model's ``server.zip`` on each worker at registration.

    Parameters
    ----------
    path_dir : str or Path
        Model directory, readable by the workers at this path (shared file system).
    """

    idempotent = True

    def __init__(self, path_dir):
        self.path_dir = str(path_dir)
        digest = hashlib.sha256(str(Path(path_dir).resolve()).encode()).hexdigest()[:12]
        self.name = f"qnn-sklearn-fhe-server-{digest}"
        self.server = None
        self._keys = KeyCache()

    def __getstate__(self):
        return {"path_dir": self.path_dir, "name": self.name}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.server = None
        self._keys = KeyCache()

    def setup(self, worker=None):
        self.server = FHEModelServer(self.path_dir).load()

    def keys(self, key_id: str, serialized_keys: bytes):
        """Deserialized evaluation keys, once per worker and key id."""
        return self._keys.get(key_id, lambda: serialized_keys)


def _run_shard(plugin_name: str, key_id: str, serialized_keys: bytes, blob: bytes) -> bytes:
    plugin = get_worker().plugins[plugin_name]
    return plugin.server.run(blob, plugin.keys(key_id, serialized_keys))


class DaskFHEInference:
    """Shard framed ciphertexts over the workers of a ``distributed.Client``.

    Parameters
    ----------
    dask_client : distributed.Client
    path_dir : str or Path
        Model directory with ``server.zip``, at the same path on the workers.
    """

    def __init__(self, dask_client, path_dir):
        FHEModelServer(path_dir).load()  # version and safety checks, here and now
        self.client = dask_client
        self.plugin = FHEModelServerPlugin(path_dir)
        self.client.register_plugin(self.plugin, name=self.plugin.name)
        self._keys: dict[str, object] = {}

    def add_keys(self, serialized_evaluation_keys: bytes) -> str:
        """Check the keys deserialize, broadcast them to every worker; returns a key id."""
        FHEModelServer.load_evaluation_keys(serialized_evaluation_keys)
        key_id = uuid.uuid4().hex
        self._keys[key_id] = self.client.scatter(
            serialized_evaluation_keys, broadcast=True, hash=False
        )
        return key_id

    def remove_keys(self, key_id: str) -> None:
        self._keys.pop(key_id).release()

    def run(self, serialized_encrypted_input: bytes, key_id: str, n_shards: int | None = None):
        """Framed ciphertexts in, framed results out (same order), one task per shard.

        ``n_shards`` defaults to the number of worker threads in the cluster.
        """
        if key_id not in self._keys:
            raise KeyError(f"Unknown evaluation key id {key_id!r}: call add_keys first.")
        if n_shards is None:
            n_shards = max(1, sum(self.client.nthreads().values()))
        futures = [
            self.client.submit(
                _run_shard, self.plugin.name, key_id, self._keys[key_id], shard, pure=False
            )
            for shard in sharding.split(serialized_encrypted_input, n_shards)
        ]
        return sharding.join(self.client.gather(futures))

    def workers_holding_keys(self, key_id: str) -> int:
        """How many workers have deserialized these keys (for checks and monitoring)."""
        plugin_name = self.plugin.name

        def count(dask_worker):
            return key_id in dask_worker.plugins[plugin_name]._keys

        return sum(self.client.run(count).values())
