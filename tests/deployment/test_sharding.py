"""The key cache and the shards that the process pool and Dask share."""

from __future__ import annotations

import pytest

from qnn_sklearn.deployment import framing
from qnn_sklearn.deployment.sharding import KeyCache, join, split


@pytest.mark.parametrize(
    "n_rows, n_shards, shard_rows, sizes",
    [
        (7, 3, None, [3, 3, 1]),
        (6, 4, None, [2, 2, 2]),
        (2, 8, None, [1, 1]),
        (5, 2, 1, [1, 1, 1, 1, 1]),
    ],
)
def test_split_keeps_the_rows_in_order_and_join_undoes_it(n_rows, n_shards, shard_rows, sizes):
    rows = [bytes([index]) * (index + 1) for index in range(n_rows)]
    shards = split(framing.pack(rows), n_shards, shard_rows)
    assert [framing.count(shard) for shard in shards] == sizes
    assert framing.unpack(join(shards)) == rows


def test_keys_are_deserialized_once_and_the_least_recent_evicted(evaluation_keys):
    reads = []

    def read(key_id):
        return lambda: reads.append(key_id) or evaluation_keys

    cache = KeyCache(size=2)
    first = cache.get("a", read("a"))
    assert cache.get("a", read("a")) is first
    cache.get("b", read("b"))
    cache.get("a", read("a"))  # "a" is now the most recent
    cache.get("c", read("c"))
    assert reads == ["a", "b", "c"]
    assert "a" in cache and "c" in cache and "b" not in cache


def test_bytes_that_are_not_keys_are_refused_and_not_cached():
    cache = KeyCache()
    with pytest.raises(ValueError, match="not evaluation keys"):
        cache.get("x", lambda: b"\x01" * 100)
    assert "x" not in cache
