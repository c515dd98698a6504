"""measure_throughput: the benchmark behind ``qnn-sklearn bench``."""

from __future__ import annotations

import os

import numpy as np
import pytest

from qnn_sklearn.deployment import FHEBatchRunner, framing, measure_throughput


def test_measure_throughput_times_the_same_rows_both_ways(model_dir, fhe_client, monkeypatch):
    X = np.random.default_rng(6).normal(size=(4, 3)) * 3
    report = measure_throughput(model_dir, fhe_client, X, n_workers=2)
    assert report["rows"] == 4 and report["n_workers"] == 2
    assert report["threads_per_worker"] == max(1, (os.cpu_count() or 1) // 2)
    assert report["sequential_rows_per_s"] * report["latency_per_row_s"] == pytest.approx(1)
    assert report["speedup"] == pytest.approx(
        report["parallel_rows_per_s"] / report["sequential_rows_per_s"]
    )
    # The two runs are compared: a parallel run that mixes up rows is caught.
    run = FHEBatchRunner.run

    def reversed_rows(self, blob, key_id, shard_rows=None):
        return framing.pack(framing.unpack(run(self, blob, key_id, shard_rows))[::-1])

    monkeypatch.setattr(FHEBatchRunner, "run", reversed_rows)
    with pytest.raises(RuntimeError, match="different results"):
        measure_throughput(model_dir, fhe_client, X, n_workers=2)
