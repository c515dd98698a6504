"""Batch inference over worker processes that share one server and its keys."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qnn_sklearn.deployment import framing
from qnn_sklearn.deployment.cli import main
from qnn_sklearn.deployment.executor import FHEBatchRunner, WorkerCrashedError


@pytest.fixture(scope="module")
def runner(model_dir):
    with FHEBatchRunner(model_dir, n_workers=2) as runner:
        yield runner


def _extracted_circuits(directory) -> list:
    """concrete's extractions of server.zip (each holds the circuit's sharedlib.so)."""
    return sorted(directory.rglob("sharedlib.so"))


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


def test_unknown_and_malformed_inputs(runner, fhe_client, evaluation_keys):
    encrypted = fhe_client.quantize_encrypt_serialize(np.zeros((1, 3)))
    with pytest.raises(KeyError, match="Unknown"):
        runner.run(encrypted, "missing")
    with pytest.raises(ValueError, match="not evaluation keys"):
        runner.add_keys(b"\x01" * 100)
    key_id = runner.add_keys(evaluation_keys)
    with pytest.raises(ValueError, match="not a serialized ciphertext"):
        runner.run(framing.pack([b"\x00" * 100]), key_id)


def test_a_key_file_is_found_from_its_id(runner, fhe_client, evaluation_keys, tmp_path):
    path = runner.new_key_path()
    path.write_bytes(evaluation_keys)
    key_id = runner.adopt_keys(path)
    out = runner.run(fhe_client.quantize_encrypt_serialize(np.zeros((1, 3))), key_id)
    assert framing.count(out) == 1
    with pytest.raises(ValueError, match="new_key_path"):
        runner.adopt_keys(tmp_path / path.name)
    runner.remove_keys(key_id)
    assert not path.exists()
    with pytest.raises(KeyError):
        runner.remove_keys(key_id)


def test_a_crash_is_charged_only_to_the_request_that_caused_it(
    runner, fhe_client, evaluation_keys, other_model, tiny, monkeypatch
):
    """Keys of another model crash the runtime. The innocent request in flight on the same pool
    at that moment is run again alone and succeeds; the culprit crashes alone too, and only it
    gets WorkerCrashedError. The replaced pool's extraction directory is removed."""
    X = np.random.default_rng(4).normal(size=(24, 3))
    encrypted = fhe_client.quantize_encrypt_serialize(X)
    key_id = runner.add_keys(evaluation_keys)
    foreign_key_id = runner.add_keys(other_model[2])
    runner.run(encrypted, key_id)  # both workers hold the keys
    pool_dir = runner._pool_dir
    run_alone = runner._run_alone
    alone = []

    def spy(calls):
        alone.append(calls[0][1])
        return run_alone(calls)

    monkeypatch.setattr(runner, "_run_alone", spy)
    with ThreadPoolExecutor(2) as threads:
        # One long shard on one worker while the culprit crashes the other.
        innocent = threads.submit(runner.run, encrypted, key_id, len(X))
        time.sleep(0.1)
        culprit = threads.submit(
            runner.run, fhe_client.quantize_encrypt_serialize(X[:1]), foreign_key_id
        )
        with pytest.raises(WorkerCrashedError, match="evaluation keys"):
            culprit.result()
        out = innocent.result()
    np.testing.assert_array_equal(
        fhe_client.deserialize_decrypt_dequantize(out), tiny[0].forward(X)
    )
    assert sorted(alone) == sorted([key_id, foreign_key_id])  # both were retried alone
    assert runner._pool_dir != pool_dir and not pool_dir.exists()


def test_a_worker_killed_while_idle_fails_no_request(runner, fhe_client, evaluation_keys, tiny):
    X = np.random.default_rng(5).normal(size=(2, 3))
    key_id = runner.add_keys(evaluation_keys)
    runner.run(fhe_client.quantize_encrypt_serialize(X), key_id)
    os.kill(runner.worker_pids[0], signal.SIGKILL)
    time.sleep(0.5)  # the pool notices the death
    out = runner.run(fhe_client.quantize_encrypt_serialize(X), key_id)
    np.testing.assert_array_equal(
        fhe_client.deserialize_decrypt_dequantize(out), tiny[0].forward(X)
    )


def test_close_stops_workers_and_removes_keys_and_extracted_circuits(
    model_dir, fhe_client, evaluation_keys
):
    runner = FHEBatchRunner(model_dir, n_workers=1)
    key_id = runner.add_keys(evaluation_keys)
    runner.run(fhe_client.quantize_encrypt_serialize(np.zeros((1, 3))), key_id)
    work_dir, workers = runner.work_dir, runner.worker_pids
    assert [path.name for path in (work_dir / "keys").iterdir()] == [f"{key_id}.evk"]
    assert len(_extracted_circuits(work_dir)) == 1  # the worker's
    runner.close()
    assert not work_dir.exists()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_cli_bench_prints_sizes_and_throughput(model_dir, capsys):
    main(["bench", str(model_dir), "--rows", "2", "--workers", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["compression"] == {"evaluation_keys": True, "input_ciphertexts": True}
    assert report["evaluation_keys_bytes"] > report["one_input_ciphertext_bytes"] > 0
    assert report["rows"] == 2
