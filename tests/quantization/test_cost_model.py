"""The cost model's table is the measured one (benchmarks/results/pbs_floor.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qnn_sklearn.quantization.cost_model import (
    BEYOND_TABLE_FACTOR,
    LOOKUP_COST_MS,
    ROUND_COST_MS_PER_BIT,
    lookup_cost_ms,
    rounded_lookup_cost_ms,
)

PBS_FLOOR = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "pbs_floor.json"


def test_table_is_the_measured_floor():
    measured = json.loads(PBS_FLOOR.read_text())["results"]
    by_precision = {row["precision"]: round(row["wall_per_pbs_s"] * 1000, 1) for row in measured}
    assert LOOKUP_COST_MS == tuple(by_precision[bits] for bits in range(1, 9))


def test_costs_grow_with_precision_and_rounding():
    costs = [lookup_cost_ms(bits) for bits in range(0, 12)]
    assert costs[0] == costs[1] == LOOKUP_COST_MS[0]
    assert all(a < b for a, b in zip(costs[1:], costs[2:]))
    assert lookup_cost_ms(10) == pytest.approx(LOOKUP_COST_MS[-1] * BEYOND_TABLE_FACTOR**2)
    assert rounded_lookup_cost_ms(4, 3) == pytest.approx(
        LOOKUP_COST_MS[3] + 3 * ROUND_COST_MS_PER_BIT
    )
