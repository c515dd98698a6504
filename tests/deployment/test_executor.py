"""Batch inference over worker processes that share one server and its keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qnn_sklearn.deployment import framing
from qnn_sklearn.deployment.cli import main
from qnn_sklearn.deployment.executor import (
    FHEBatchRunner,
    WorkerCrashedError,
    measure_throughput,
)


@pytest.fixture(scope="module")
def runner(model_dir):
    with FHEBatchRunner(model_dir, n_workers=2) as runner:
        yield runner


def test_sharded_rows_decrypt_to_the_clear_prediction(runner, fhe_client, evaluation_keys, tiny):
    X = np.random.default_rng(3).normal(size=(7, 3))
    key_id = runner.add_keys(evaluation_keys)
    out = runner.run(fhe_client.quantize_encrypt_serialize(X), key_id)
    assert framing.count(out) == len(X)
    np.testing.assert_array_equal(
        fhe_client.deserialize_decrypt_dequantize(out), tiny[0].forward(X)
    )
    out = runner.run(fhe_client.quantize_encrypt_serialize(X[:3]), key_id, shard_rows=1)
    np.testing.assert_array_equal(
        fhe_client.deserialize_decrypt_dequantize(out), tiny[0].forward(X[:3])
    )


def test_unknown_malformed_and_foreign_inputs(runner, fhe_client, evaluation_keys, other_model):
    encrypted = fhe_client.quantize_encrypt_serialize(np.zeros((1, 3)))
    with pytest.raises(KeyError, match="Unknown"):
        runner.run(encrypted, "missing")
    with pytest.raises(ValueError, match="not evaluation keys"):
        runner.add_keys(b"\x01" * 100)
    key_id = runner.add_keys(evaluation_keys)
    with pytest.raises(ValueError, match="not a serialized ciphertext"):
        runner.run(framing.pack([b"\x00" * 100]), key_id)
    foreign_keys = runner.add_keys(other_model[2])
    with pytest.raises(WorkerCrashedError, match="evaluation keys"):
        runner.run(encrypted, foreign_keys)
    runner.remove_keys(foreign_keys)
    out = runner.run(encrypted, key_id)  # a fresh pool took over
    assert fhe_client.deserialize_decrypt(out).shape == (1, 2)


def test_measure_throughput_reports_both_modes(model_dir, fhe_client):
    report = measure_throughput(model_dir, fhe_client, np.zeros((4, 3)), n_workers=2)
    assert report["rows"] == 4 and report["n_workers"] == 2
    for key in ("sequential_rows_per_s", "parallel_rows_per_s", "speedup", "latency_per_row_s"):
        assert report[key] > 0


def test_cli_bench_prints_sizes_and_throughput(model_dir, capsys):
    main(["bench", str(model_dir), "--rows", "2", "--workers", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["compression"] == {"evaluation_keys": True, "input_ciphertexts": True}
    assert report["evaluation_keys_bytes"] > report["one_input_ciphertext_bytes"] > 0
    assert report["rows"] == 2
