"""benchmarks/anchor.py without FHE: what each system is given, and the merge of its two files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import anchor  # noqa: E402


def measured_row(task: str, setting: str, accuracy: float, pbs: int, fhe_s: float) -> dict:
    """A row as ``measure`` saves it, with made-up figures."""
    return {
        "task": task,
        "setting": setting,
        "network_accuracy": accuracy,
        "clear_accuracy": accuracy,
        "pbs_count": pbs,
        "pbs": [{"kind": "lookup", "count": pbs, "precision": 4}],
        "max_bit_width": 6,
        "keygen_s": 3.0,
        "fhe_s_rows": [fhe_s, fhe_s + 0.1, fhe_s - 0.1],
        "fhe_s_per_row": fhe_s,
        "fhe_rows_equal_clear": 4,
        "fit_s": 10.0,
        "load_average": [1.0, 1.5],
        "commit": "abc1234",
        "command": "python benchmarks/anchor.py measure",
    }


def write_system(results: Path, system: str, rows: list[dict]) -> None:
    data = {"system": system, "versions": {"numpy": "1"}, "rows": rows}
    anchor.system_file(system, smoke=False, results=results).write_text(json.dumps(data))


@pytest.fixture
def merged(tmp_path):
    write_system(
        tmp_path,
        "qnn_sklearn",
        [
            measured_row("digits", "defaults", 0.89, 1911, 15.5),
            measured_row("breast_cancer", "seed", 0.95, 840, 2.0),
            measured_row("breast_cancer", "defaults", 0.92, 1320, 5.0),
        ],
    )
    write_system(
        tmp_path,
        "concrete_ml",
        [
            measured_row("breast_cancer", "defaults", 0.88, 1200, 10.0),
            measured_row("breast_cancer", "seed", 0.78, 840, 8.0),
        ],
    )
    return anchor.merge(results=tmp_path), (tmp_path / "ANCHOR.md").read_text()


def test_the_ratio_is_our_latency_over_theirs_for_rows_both_measured(merged):
    data, _ = merged
    ratios = {(pair["task"], pair["setting"]): pair["latency_ratio"] for pair in data["rows"]}
    assert ratios == {
        ("breast_cancer", "defaults"): 0.5,
        ("breast_cancer", "seed"): 0.25,
        ("digits", "defaults"): None,
    }
    assert [pair["task"] for pair in data["rows"]] == ["breast_cancer", "breast_cancer", "digits"]


def test_the_table_shows_both_systems_and_the_load_of_each_row(merged):
    _, table = merged
    both = "| breast_cancer | defaults | 0.920 / 1320 / 5.00 | 0.880 / 1200 / 10.00 | 0.50 |"
    assert both in table
    assert "| digits | defaults | 0.890 / 1911 / 15.50 | – | – |" in table
    assert table.count("| 1.0 → 1.5 | abc1234 |") == 5
    assert "- `python benchmarks/anchor.py measure`" in table


def test_a_row_measured_again_replaces_the_older_one(tmp_path):
    path = tmp_path / "anchor_qnn_sklearn.json"
    anchor.save_row(path, "qnn_sklearn", measured_row("digits", "seed", 0.5, 10, 1.0))
    anchor.save_row(path, "qnn_sklearn", measured_row("breast_cancer", "seed", 0.9, 10, 1.0))
    anchor.save_row(path, "qnn_sklearn", measured_row("digits", "seed", 0.7, 10, 1.0))
    rows = json.loads(path.read_text())["rows"]
    assert [(row["task"], row["clear_accuracy"]) for row in rows] == [
        ("breast_cancer", 0.9),
        ("digits", 0.7),
    ]


def test_both_systems_get_the_seed_network_and_only_their_own_defaults_otherwise():
    ours = anchor.estimator_params("qnn_sklearn", "mnist", "seed")
    theirs = anchor.estimator_params("concrete_ml", "mnist", "seed")
    assert ours == {**theirs, "random_state": 0}
    assert theirs["module__n_hidden_neurons_multiplier"] == 1 and theirs["max_epochs"] == 50
    assert anchor.estimator_params("qnn_sklearn", "digits", "defaults") == {"random_state": 0}
    assert anchor.estimator_params("concrete_ml", "digits", "defaults") == {"module__n_layers": 3}


def test_bootstraps_are_read_from_signed_and_unsigned_circuits():
    """Concrete ML's circuits compute on signed integers (esint), ours on unsigned (eint): the
    same rounding and lookups read the same from both (a reader of eint only found none)."""
    import numpy as np
    from circuit_cost import circuit_pbs

    from qnn_sklearn.fhe_runtime import fhe

    def round_then_square(x):
        return fhe.round_bit_pattern(x, lsbs_to_remove=2) ** 2 // 64

    readings = []
    for low in (0, -32):  # unsigned, then signed inputs
        compiler = fhe.Compiler(round_then_square, {"x": "encrypted"})
        circuit = compiler.compile(np.arange(low, low + 32).reshape(-1, 8))
        assert ("esint" in circuit.mlir) == (low < 0)
        readings.append(circuit_pbs(circuit))
    assert readings[0] == readings[1]
    assert {"kind": "round", "count": 8 * 2, "precision": 1} in readings[1]


def test_the_cnn_row_follows_the_tabular_ones_and_shows_bootstraps_the_mlir_does_not(tmp_path):
    """Concrete ML's MaxPool is one maxpool2d op in its MLIR: its bootstraps are in concrete's
    count only, and the table says how many of them the MLIR did not show."""
    cnn = {
        **measured_row("cnn_digits", "defaults", 0.9, 736, 100.0),
        "pbs": [{"kind": "lookup", "count": 480, "precision": 8}],
    }
    write_system(tmp_path, "qnn_sklearn", [measured_row("breast_cancer", "seed", 0.9, 840, 2.0)])
    write_system(
        tmp_path, "concrete_ml", [cnn, measured_row("breast_cancer", "seed", 0.8, 840, 8.0)]
    )
    data = anchor.merge(results=tmp_path)
    assert [(pair["task"], pair["setting"]) for pair in data["rows"]] == [
        ("breast_cancer", "seed"),
        ("cnn_digits", "defaults"),
    ]
    assert "| 736 | 480×8b + 256×unread |" in (tmp_path / "ANCHOR.md").read_text()
    assert anchor.task_settings("cnn_digits") == ("defaults",)
