"""What every scale-out of ``FHEModelServer.run`` needs: a key cache per worker, and shards.

The process pool (:mod:`.executor`) and Dask (:mod:`.dask_inference`) both run rows of one
request on several workers. Each worker keeps the evaluation keys it deserialized, by key id
(deserializing them costs about as much as running a few rows, and they take hundreds of MB, so
only a few stay); each request is split into shards of consecutive framed rows, and the shards'
results are joined back in order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ..fhe_runtime import fhe
from . import framing
from .fhe_model import FHEModelServer

KEYS_CACHED_PER_WORKER = 4
"""Evaluation key sets a worker keeps deserialized; the least recently used goes first."""


class KeyCache:
    """Deserialized evaluation keys by key id, least recently used evicted first.

    Thread-safe (Dask runs several tasks per worker at once); a set is deserialized once, even
    when several tasks ask for it together.

    Parameters
    ----------
    size : int, default KEYS_CACHED_PER_WORKER
        Most key sets kept.
    """

    def __init__(self, size: int = KEYS_CACHED_PER_WORKER):
        self.size = size
        self._keys: OrderedDict[str, fhe.EvaluationKeys] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key_id: str) -> bool:
        with self._lock:
            return key_id in self._keys

    def get(self, key_id: str, read: Callable[[], bytes]) -> fhe.EvaluationKeys:
        """The keys of ``key_id``; on a miss, ``read()`` gives their bytes to deserialize.

        ``ValueError`` when those bytes are not evaluation keys; whatever ``read`` raises.
        """
        with self._lock:
            if key_id in self._keys:
                self._keys.move_to_end(key_id)
                return self._keys[key_id]
            keys = FHEModelServer.load_evaluation_keys(read())
            self._keys[key_id] = keys
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)
            return keys


def split(serialized_encrypted_input: bytes, n_shards: int, shard_rows: int | None = None):
    """Framed ciphertexts as framed shards of consecutive rows, in order.

    ``shard_rows`` rows per shard; by default as few rows as make at most ``n_shards`` shards.
    ``FramingError`` for a malformed blob.
    """
    payloads = framing.unpack(serialized_encrypted_input)
    if shard_rows is None:
        shard_rows = max(1, -(-len(payloads) // max(1, n_shards)))
    return [
        framing.pack(payloads[start : start + shard_rows])
        for start in range(0, len(payloads), shard_rows)
    ]


def join(results: Iterable[bytes]) -> bytes:
    """The framed results of the shards (in the order of :func:`split`) as one framed blob."""
    return framing.pack([item for blob in results for item in framing.unpack(blob)])
